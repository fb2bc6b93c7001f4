"""Helpers for the chart tests (checks/test_helm.py, test_helm_config.py, test_alerts.py):
render charts with Helm's own engine (helm-python-sdk, no helm binary), split the output into
Kubernetes objects, validate them with kubernetes-validate (plus subset schemas for the
PodMonitor and PrometheusRule CRDs), and the value sets the tests share."""

from __future__ import annotations

import copy
import shutil
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate.utils as kv
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
HELM_DIR = REPO / "helm"
CHART_DIR = HELM_DIR / "sigv4-sidecar"
EXAMPLE_DIR = HELM_DIR / "examples" / "app-with-sidecar"

RELEASE = "demo"
NAMESPACE = "apps"

UPSTREAM = "https://abc123.execute-api.us-east-1.amazonaws.com/Prod"


def render(chart_dir: Path, values: dict[str, Any] | None, *, name: str = RELEASE,
           namespace: str = NAMESPACE) -> dict[str, str]:
    """Render a chart offline (as `helm template` does, schema validation included)."""
    with helm.Chart.load(chart_dir) as chart:
        return chart.render(values, name=name, namespace=namespace, is_install=True)


def objects(manifests: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects of rendered manifests (NOTES.txt and empty documents dropped),
    each with the template it came from under the key `__source`."""
    out: list[dict[str, Any]] = []
    for source, text in sorted(manifests.items()):
        if source.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__source"] = source
                out.append(doc)
    return out


def render_objects(values: dict[str, Any] | None, chart_dir: Path = CHART_DIR,
                   **kw: Any) -> list[dict[str, Any]]:
    return objects(render(chart_dir, values, **kw))


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def kinds(objs: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__source"}


def sidecar(pod_spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(list it is in, container) of the sigv4-sidecar container of a pod spec."""
    hits = [(where, c) for where in ("initContainers", "containers")
            for c in pod_spec.get(where) or [] if c["name"] == "sigv4-sidecar"]
    assert len(hits) == 1, f"expected exactly one sigv4-sidecar container, got {hits}"
    return hits[0]


# --- kubernetes-validate -------------------------------------------------------------------

def k8s_versions() -> list[str]:
    """Kubernetes 1.29 (native sidecars on by default) and the newest schema set shipped."""
    return ["1.29.0", kv.latest_version()]


# The PodMonitor CRD (monitoring.coreos.com/v1) is not part of kubernetes-validate's
# built-in schemas and its full OpenAPI schema (~80 kB) is not vendored here. This is a strict
# subset written from the CRD: every field the chart can emit, with the CRD's types and its
# Duration pattern; anything else (a typo, a field of the wrong type) fails.
_DURATION = "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}


def _crd_subset_schema(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A monitoring.coreos.com/v1 object of `kind` with strict metadata and the given spec."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                    "namespace": {"type": "string"},
                    "labels": _LABELS,
                    "annotations": _LABELS,
                },
            },
            "spec": spec,
        },
    }


PODMONITOR_SUBSET_SCHEMA: dict[str, Any] = _crd_subset_schema("PodMonitor", {
    "type": "object", "required": ["selector", "podMetricsEndpoints"], "additionalProperties": False,
    "properties": {
        "namespaceSelector": {
            "type": "object", "additionalProperties": False,
            "properties": {"any": {"type": "boolean"},
                           "matchNames": {"type": "array", "items": {"type": "string"}}},
        },
        "selector": {
            "type": "object", "additionalProperties": False,
            "properties": {"matchLabels": {"type": "object", "minProperties": 1,
                                           "additionalProperties": {"type": "string"}}},
        },
        "podMetricsEndpoints": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "port": {"type": "string"},
                    "path": {"type": "string"},
                    "interval": {"type": "string", "pattern": _DURATION},
                    "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                },
            },
        },
    },
})


# The PrometheusRule CRD, the same way: a strict subset of its schema (spec.groups[].rules[]).
PROMETHEUSRULE_SUBSET_SCHEMA: dict[str, Any] = _crd_subset_schema("PrometheusRule", {
    "type": "object", "additionalProperties": False,
    "properties": {
        "groups": {
            "type": "array",
            "items": {
                "type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": {"type": "string", "pattern": _DURATION},
                    "rules": {
                        "type": "array",
                        "items": {
                            "type": "object", "required": ["expr"], "additionalProperties": False,
                            "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                            "properties": {
                                "alert": {"type": "string"},
                                "record": {"type": "string"},
                                "expr": {"type": ["string", "integer"]},
                                "for": {"type": "string", "pattern": _DURATION},
                                "keep_firing_for": {"type": "string", "pattern": _DURATION},
                                "labels": _LABELS,
                                "annotations": _LABELS,
                            },
                        },
                    },
                },
            },
        },
    },
})

CRD_SUBSET_SCHEMAS = {"PodMonitor": PODMONITOR_SUBSET_SCHEMA, "PrometheusRule": PROMETHEUSRULE_SUBSET_SCHEMA}


def validate_k8s(obj: dict[str, Any], version: str) -> str:
    """Validate one object strictly; returns what it was validated against."""
    data = strip(obj)
    if data.get("apiVersion") == "monitoring.coreos.com/v1":
        kind = data.get("kind")
        assert kind in CRD_SUBSET_SCHEMAS, f"no subset schema for monitoring.coreos.com/v1 {kind}"
        jsonschema.Draft7Validator(CRD_SUBSET_SCHEMAS[kind]).validate(data)
        return f"{kind} subset schema"
    try:
        return kv.validate(data, version, strict=True)
    except kv.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        raise AssertionError(
            f"{obj['__source']}: {data['kind']}/{data['metadata']['name']} is invalid for "
            f"Kubernetes {e.version}: {path}: {e.message}") from None
    except kv.SchemaNotFoundError as e:
        raise AssertionError(f"{obj['__source']}: {e.message}") from None


# --- the dependency example ---------------------------------------------------------------

def prepare_example(workdir: Path) -> Path:
    """Copy helm/ into workdir and resolve the example's `file://../../sigv4-sidecar`
    dependency there with Helm's own `dependency update` (offline: a file:// repository is
    packaged from the local directory). The source tree is left untouched."""
    dest = workdir / "helm"
    shutil.copytree(HELM_DIR, dest, ignore=shutil.ignore_patterns("charts", "Chart.lock", "*.tgz"))
    example = dest / "examples" / "app-with-sidecar"
    before = {d["name"]: d["status"] for d in helm.dependency_list(example)}
    assert before == {"sigv4-sidecar": "missing"}, before
    helm.dependency_update(example)
    after = {d["name"]: d["status"] for d in helm.dependency_list(example)}
    assert after == {"sigv4-sidecar": "ok"}, after
    return example


# --- the alerting rules --------------------------------------------------------------------

def rules(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Prometheus rules file (`groups: ...`) the chart renders from files/alerts.yaml into
    its PrometheusRule, with metrics.prometheusRule.enabled forced on. What promtool and the
    real-Prometheus check use: the chart's own output, so neither can drift from it."""
    vals = copy.deepcopy(values) if values else {"config": {"upstream": UPSTREAM}}
    vals.setdefault("metrics", {}).setdefault("prometheusRule", {})["enabled"] = True
    rule = one(render_objects(vals), "PrometheusRule")
    return rule["spec"]


def write_rules(path: Path, values: dict[str, Any] | None = None) -> Path:
    path.write_text(yaml.safe_dump(rules(values), sort_keys=False))
    return path


# --- values and rendered objects shared by the chart tests ---------------------------------

FULLNAME = f"{RELEASE}-sigv4-sidecar"

BASE: dict[str, Any] = {"config": {"upstream": UPSTREAM}}

TWO_ROUTES: list[dict[str, Any]] = [
    {
        "name": "search",
        "listen": "127.0.0.1:8081",
        "upstream": "https://search-logs-xyz.eu-west-1.es.amazonaws.com",
        "region": "eu-west-1",
        "service": "es",
        "roleArn": "arn:aws:iam::222222222222:role/search-reader",
    },
    {
        "name": "fn-url",
        "listen": "127.0.0.1:8082",
        "upstream": "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws",
        "maxBodyBytes": 1048576,
        "requestTimeout": "10s",
    },
]


# Every top-level config key, each set to a value that is not its default.
ALL_TOP_LEVEL = {
    "upstream": UPSTREAM,
    "region": "us-east-1",
    "service": "execute-api",
    "roleArn": "arn:aws:iam::111111111111:role/orders-caller",
    "roleSessionName": "orders",
    "externalId": "ext-\"quoted\"\\slash",
    "roleDuration": "2h",
    "refreshBeforeExpiry": "15m",
    "maxBodyBytes": 20971520,
    "caFile": "/etc/sigv4-sidecar/ca/ca.pem",
    "connectTimeout": "1500ms",
    "requestTimeout": "45s",
    "connect": "vpce-0abc123-de4f5g6h.execute-api.us-east-1.vpce.amazonaws.com",
    "payload": "unsigned",
    "signingAlgorithm": "sigv4a",
    "regionSet": "us-east-1,us-west-2",
    "unsignedHeaders": ["x-edge-hop", "X-Cdn-Id"],
    "clientAuthorizationTo": "x-original-authorization",
    "shutdownGrace": "25s",
    "listen": "127.0.0.1:18080",
    "adminListen": "0.0.0.0:19090",
    "logFormat": "text",
    "logLevel": "debug",
    "maxConnections": 512,
    "maxInflightBodyBytes": 41943040,
    "maxHeaderBytes": 32768,
    "headerReadTimeout": "5s",
}

def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Deep copy of base with dotted-path changes: with_(BASE, **{"config.region": "x"})."""
    out = copy.deepcopy(base)
    for path, value in changes.items():
        node = out
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": BASE,
    "plain-container": with_(BASE, nativeSidecar=False),
    "podmonitor": with_(BASE, **{"metrics.podMonitor.enabled": True,
                                 "metrics.podMonitor.labels": {"release": "kube-prometheus-stack"}}),
    "alerts-and-dashboard": with_(BASE, **{"metrics.prometheusRule.enabled": True,
                                           "metrics.prometheusRule.labels": {"release": "kube-prometheus-stack"},
                                           "metrics.grafanaDashboard.enabled": True}),
    "two-routes": with_(BASE, **{"config.routes": TWO_ROUTES,
                                 "config.roleArn": "arn:aws:iam::111111111111:role/orders-caller"}),
    "irsa-existing-sa": with_(BASE, **{"serviceAccount.create": False, "serviceAccount.name": "orders",
                                       "automountServiceAccountToken": False}),
}


def deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "Deployment")


def pod_spec(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return deployment(objs)["spec"]["template"]["spec"]


def config_toml(objs: list[dict[str, Any]]) -> str:
    return one(objs, "ConfigMap", f"{FULLNAME}-config")["data"]["config.toml"]


def config(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return tomllib.loads(config_toml(objs))


def schema_rejects(values: dict[str, Any], match: str) -> None:
    """Both the schema check and a render must refuse the values, naming the problem."""
    with helm.Chart.load(CHART_DIR) as chart:
        merged = chart.merge_values(values)
        with pytest.raises(helm.HelmValuesError, match=match):
            chart.validate_schema(merged)
    with pytest.raises(helm.HelmValuesError, match=match):
        render(CHART_DIR, values)
