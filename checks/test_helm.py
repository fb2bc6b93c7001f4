"""The Helm chart (issue 4, routes part of issue 5): rendered with Helm's own engine
(helm-python-sdk), linted, every manifest validated with kubernetes-validate against
Kubernetes 1.29+ schemas, the chart's semantics asserted, and bad values rejected by
values.schema.json. The rendered configuration (TOML, checksum, `--check`) is in
test_helm_config.py."""

from __future__ import annotations

import copy
import hashlib
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helm_support as hs  # noqa: E402
from helm_support import (  # noqa: E402
    ALL_TOP_LEVEL,
    BASE,
    CHART_DIR,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    TWO_ROUTES,
    UPSTREAM,
    VALUE_SETS,
    config,
    config_toml,
    deployment,
    pod_spec,
    schema_rejects,
    with_,
)


@pytest.fixture(scope="session")
def example_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hs.prepare_example(tmp_path_factory.mktemp("example"))


# --- chart metadata and lint -----------------------------------------------------------------

def test_chart_metadata() -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        meta = chart.metadata
        assert chart.schema is not None, "values.schema.json missing"
        assert chart.schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert meta["apiVersion"] == "v2"
    assert meta["type"] == "application"
    assert meta["appVersion"] == "0.1.0"
    # Native sidecars need 1.29+ (enforced by the template); plain mode supports >= 1.25.
    assert meta["kubeVersion"] == ">=1.25.0-0"


def lint_problems(path: Path, values: dict[str, Any] | None) -> list[dict[str, Any]]:
    report = helm.lint(path, values, strict=True, kube_version="v1.29.0")
    assert report["total_charts_linted"] >= 1
    # severity 2 = warning, 3 = error; info (1, e.g. "icon is recommended") is fine
    return [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_chart(value_set: str) -> None:
    assert lint_problems(CHART_DIR, VALUE_SETS[value_set]) == []


def test_lint_rejects_missing_upstream() -> None:
    problems = lint_problems(CHART_DIR, None)
    assert any("upstream" in p["error"] for p in problems), problems


def test_lint_example_chart(example_chart: Path) -> None:
    assert lint_problems(example_chart, None) == []


# --- every manifest is a valid Kubernetes object -------------------------------------------

@pytest.mark.parametrize("version", hs.k8s_versions())
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_manifests_validate(value_set: str, version: str) -> None:
    objs = hs.render_objects(VALUE_SETS[value_set])
    expected = {"ConfigMap", "Deployment"}
    assert expected <= set(hs.kinds(objs))
    for obj in objs:
        hs.validate_k8s(obj, version)


def test_plain_mode_validates_on_kubernetes_1_25() -> None:
    """kubeVersion says >= 1.25: the plain-container mode must be valid there."""
    for obj in hs.render_objects(VALUE_SETS["plain-container"]):
        hs.validate_k8s(obj, "1.25.0")


@pytest.mark.parametrize("version", hs.k8s_versions())
def test_example_chart_manifests_validate(example_chart: Path, version: str) -> None:
    objs = hs.render_objects({}, chart_dir=example_chart)
    assert hs.kinds(objs) == ["ConfigMap", "Deployment", "ServiceAccount"]
    for obj in objs:
        hs.validate_k8s(obj, version)


def test_podmonitor_subset_schema_catches_typos() -> None:
    objs = hs.render_objects(VALUE_SETS["podmonitor"])
    pm = copy.deepcopy(hs.one(objs, "PodMonitor"))
    hs.validate_k8s(pm, "1.29.0")
    pm["spec"]["podMetricEndpoints"] = pm["spec"].pop("podMetricsEndpoints")
    with pytest.raises(Exception, match="podMetricEndpoints"):
        hs.validate_k8s(pm, "1.29.0")


def test_kubernetes_validate_catches_invalid_pod_spec() -> None:
    """Control: the strict validation used above does reject a bad manifest."""
    dep = copy.deepcopy(deployment(hs.render_objects(BASE)))
    dep["spec"]["template"]["spec"]["initContainers"][0]["restartPolicy"] = ["Always"]
    with pytest.raises(AssertionError, match="restartPolicy"):
        hs.validate_k8s(dep, "1.29.0")
    dep = copy.deepcopy(deployment(hs.render_objects(BASE)))
    dep["spec"]["template"]["spec"]["initContainers"][0]["readinesProbe"] = {}
    with pytest.raises(AssertionError, match="readinesProbe"):
        hs.validate_k8s(dep, "1.29.0")


# --- sidecar placement, probes, hardening ----------------------------------------------------

def test_native_sidecar_is_an_init_container_with_restart_policy_always() -> None:
    spec = pod_spec(hs.render_objects(BASE))
    where, c = hs.sidecar(spec)
    assert where == "initContainers"
    assert c["restartPolicy"] == "Always"
    assert [x["name"] for x in spec["containers"]] == ["app"]
    assert c["image"] == "ghcr.io/example/sigv4-sidecar:0.1.0"
    assert c["args"] == ["--config", "/etc/sigv4-sidecar/config.toml"]


def test_native_sidecar_refused_before_kubernetes_1_29(capfd: pytest.CaptureFixture[str]) -> None:
    """The template fails nativeSidecar=true on a cluster older than 1.29. An offline render
    has no cluster version, so this goes through `helm lint --kube-version`, which reports a
    template `fail` as a log line rather than an error (Helm's lint mode)."""
    message = "nativeSidecar=true needs Kubernetes 1.29+"
    helm.lint(CHART_DIR, BASE, kube_version="v1.28.9")
    out, err = capfd.readouterr()
    assert message in out + err
    for values, version in ((BASE, "v1.29.0"), (VALUE_SETS["plain-container"], "v1.28.9")):
        helm.lint(CHART_DIR, values, kube_version=version)
        out, err = capfd.readouterr()
        assert message not in out + err, (values, version)


def test_plain_mode_puts_the_sidecar_in_containers() -> None:
    spec = pod_spec(hs.render_objects(VALUE_SETS["plain-container"]))
    where, c = hs.sidecar(spec)
    assert where == "containers"
    assert "restartPolicy" not in c
    assert not spec.get("initContainers")
    assert [x["name"] for x in spec["containers"]] == ["app", "sigv4-sidecar"]


@pytest.mark.parametrize("value_set", ["defaults", "plain-container"])
def test_probes(value_set: str) -> None:
    _, c = hs.sidecar(pod_spec(hs.render_objects(VALUE_SETS[value_set])))
    admin = {p["name"]: p["containerPort"] for p in c["ports"]}["admin"]
    assert admin == 9090
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"),
                        ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "admin"}, probe


def test_admin_port_follows_admin_listen() -> None:
    objs = hs.render_objects(with_(BASE, **{"config.adminListen": "0.0.0.0:9500"}))
    _, c = hs.sidecar(pod_spec(objs))
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["admin"] == 9500
    annotations = deployment(objs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9500"


def test_security_hardened_by_default() -> None:
    spec = pod_spec(hs.render_objects(BASE))
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["fsGroup"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    _, c = hs.sidecar(spec)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    app = spec["containers"][0]["securityContext"]
    assert app["readOnlyRootFilesystem"] is True and app["allowPrivilegeEscalation"] is False
    assert app["capabilities"] == {"drop": ["ALL"]}
    # Left to the Kubernetes default: IRSA / Pod Identity tokens are projected separately.
    assert "automountServiceAccountToken" not in spec
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}


def test_config_is_mounted_read_only_from_the_configmap() -> None:
    objs = hs.render_objects(BASE)
    spec = pod_spec(objs)
    _, c = hs.sidecar(spec)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "sigv4-sidecar-config")
    assert mount == {"name": "sigv4-sidecar-config", "mountPath": "/etc/sigv4-sidecar", "readOnly": True}
    vol = next(v for v in spec["volumes"] if v["name"] == "sigv4-sidecar-config")
    assert vol["configMap"]["name"] == f"{FULLNAME}-config"
    hs.one(objs, "ConfigMap", f"{FULLNAME}-config")


def test_extra_env_reaches_the_sidecar() -> None:
    env = [{"name": "AWS_REGION", "value": "eu-west-1"},
           {"name": "AWS_ENDPOINT_URL_STS", "value": "http://sts.local:4566"},
           {"name": "RUST_LOG", "value": "debug"}]
    _, c = hs.sidecar(pod_spec(hs.render_objects(with_(BASE, extraEnv=env))))
    assert c["env"] == env


def test_app_container_from_values() -> None:
    app = {"enabled": True, "name": "orders", "image": {"repository": "example/orders", "tag": "2.3.4"},
           "command": ["/orders"], "args": ["--port", "8000"],
           "env": [{"name": "API_URL", "value": "http://127.0.0.1:8080"}],
           "ports": [{"name": "http", "containerPort": 8000}]}
    spec = pod_spec(hs.render_objects(with_(BASE, app=app)))
    c = spec["containers"][0]
    assert c["name"] == "orders" and c["image"] == "example/orders:2.3.4"
    assert c["command"] == ["/orders"] and c["args"] == ["--port", "8000"]
    assert c["env"] == app["env"] and c["ports"] == app["ports"]


def test_deployment_can_be_switched_off() -> None:
    objs = hs.render_objects(with_(BASE, **{"deployment.enabled": False}))
    assert hs.kinds(objs) == ["ConfigMap", "ServiceAccount"]


def test_native_mode_without_app_fails_clearly() -> None:
    with pytest.raises(helm.HelmRenderError, match="app.enabled=false"):
        hs.render(CHART_DIR, with_(BASE, **{"app.enabled": False}))
    # plain mode: the sidecar alone is a valid pod
    spec = pod_spec(hs.render_objects(with_(BASE, nativeSidecar=False, **{"app.enabled": False})))
    assert [c["name"] for c in spec["containers"]] == ["sigv4-sidecar"]


def test_replicas_and_scheduling_values() -> None:
    vals = with_(BASE, replicaCount=3, nodeSelector={"kubernetes.io/arch": "arm64"},
                 tolerations=[{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                 podLabels={"team": "orders"}, podAnnotations={"example.com/owner": "orders"})
    dep = deployment(hs.render_objects(vals))
    assert dep["spec"]["replicas"] == 3
    tpl = dep["spec"]["template"]
    assert tpl["spec"]["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert tpl["spec"]["tolerations"][0]["key"] == "dedicated"
    assert tpl["metadata"]["labels"]["team"] == "orders"
    assert tpl["metadata"]["annotations"]["example.com/owner"] == "orders"
    assert "checksum/config" in tpl["metadata"]["annotations"]


# --- routes, ServiceAccount, metrics ---------------------------------------------------------

def test_container_ports_include_every_route() -> None:
    _, c = hs.sidecar(pod_spec(hs.render_objects(VALUE_SETS["two-routes"])))
    ports = {p["containerPort"]: p for p in c["ports"]}
    assert set(ports) == {8080, 9090, 8081, 8082}
    assert ports[8080]["name"] == "proxy" and ports[9090]["name"] == "admin"
    names = [p["name"] for p in c["ports"]]
    assert len(set(names)) == len(names) and all(len(n) <= 15 for n in names)


def test_proxy_port_follows_listen() -> None:
    _, c = hs.sidecar(pod_spec(hs.render_objects(with_(BASE, **{"config.listen": "[::1]:8000"}))))
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["proxy"] == 8000


def test_duplicate_route_port_fails() -> None:
    routes = [dict(TWO_ROUTES[0], listen="127.0.0.1:8080")]
    with pytest.raises(helm.HelmRenderError, match=r"config\.routes\[0\]\.listen: port 8080"):
        hs.render(CHART_DIR, with_(BASE, **{"config.routes": routes}))


def test_irsa_annotation_lands_on_the_service_account() -> None:
    arn = "arn:aws:iam::111111111111:role/orders-irsa"
    objs = hs.render_objects(with_(BASE, **{"serviceAccount.annotations": {"eks.amazonaws.com/role-arn": arn}}))
    sa = hs.one(objs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": arn}
    assert pod_spec(objs)["serviceAccountName"] == sa["metadata"]["name"] == FULLNAME
    assert sa["metadata"]["namespace"] == NAMESPACE


def test_existing_service_account() -> None:
    objs = hs.render_objects(VALUE_SETS["irsa-existing-sa"])
    assert "ServiceAccount" not in hs.kinds(objs)
    spec = pod_spec(objs)
    assert spec["serviceAccountName"] == "orders"
    assert spec["automountServiceAccountToken"] is False


def test_scrape_annotations() -> None:
    annotations = deployment(hs.render_objects(BASE))["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9090"
    assert annotations["prometheus.io/path"] == "/metrics"
    off = deployment(hs.render_objects(with_(BASE, **{"metrics.scrapeAnnotations": False})))
    assert not any(k.startswith("prometheus.io/") for k in off["spec"]["template"]["metadata"]["annotations"])


def test_podmonitor_off_by_default_and_selects_the_pods() -> None:
    assert "PodMonitor" not in hs.kinds(hs.render_objects(BASE))
    objs = hs.render_objects(VALUE_SETS["podmonitor"])
    pm = hs.one(objs, "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    pod_labels = deployment(objs)["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    endpoint = pm["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "admin" and endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "30s"
    _, c = hs.sidecar(pod_spec(objs))
    assert "admin" in [p["name"] for p in c["ports"]]


# --- the dependency example (usage mode 2) ---------------------------------------------------

def test_example_chart_embeds_the_sidecar(example_chart: Path) -> None:
    objs = hs.render_objects({}, chart_dir=example_chart, name="shop")
    deps = [o for o in objs if o["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in deps] == ["shop-app-with-sidecar"], "subchart Deployment must be off"
    spec = deps[0]["spec"]["template"]["spec"]
    where, c = hs.sidecar(spec)
    assert where == "initContainers" and c["restartPolicy"] == "Always"
    assert c["image"] == "ghcr.io/example/sigv4-sidecar:0.1.0"  # appVersion found via .Subcharts
    assert 8081 in [p["containerPort"] for p in c["ports"]]
    cm = hs.one(objs, "ConfigMap")
    vol = next(v for v in spec["volumes"] if v["name"] == "sigv4-sidecar-config")
    assert vol["configMap"]["name"] == cm["metadata"]["name"] == "shop-sigv4-sidecar-config"
    sa = hs.one(objs, "ServiceAccount")
    assert spec["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/app-with-sidecar")
    toml_text = cm["data"]["config.toml"]
    assert [r["name"] for r in tomllib.loads(toml_text)["routes"]] == ["search"]
    annotations = deps[0]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"] == hashlib.sha256(toml_text[:-1].encode()).hexdigest()
    assert annotations["prometheus.io/port"] == "9090"


def test_example_chart_plain_mode(example_chart: Path) -> None:
    objs = hs.render_objects({"sigv4-sidecar": {"nativeSidecar": False}}, chart_dir=example_chart)
    where, c = hs.sidecar(hs.one(objs, "Deployment")["spec"]["template"]["spec"])
    assert where == "containers" and "restartPolicy" not in c


def test_example_chart_values_are_schema_checked(example_chart: Path) -> None:
    with pytest.raises(helm.HelmValuesError, match="roleARN"):
        hs.render(example_chart, {"sigv4-sidecar": {"config": {"roleARN": "x"}}})


def test_named_templates_accept_an_explicit_context(example_chart: Path) -> None:
    """An aliased dependency passes (dict "Values" ... "Release" ...) to the templates."""
    tpl = example_chart / "templates" / "aliased.yaml"
    tpl.write_text(
        "{{- $ctx := dict \"Values\" (index .Values \"sigv4-sidecar\") \"Release\" .Release \"AppVersion\" \"9.9.9\" }}\n"
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: aliased\n  annotations:\n"
        "    {{- include \"sigv4-sidecar.podAnnotations\" $ctx | nindent 4 }}\n"
        "spec:\n  initContainers:\n    {{- include \"sigv4-sidecar.container\" $ctx | nindent 4 }}\n"
        "  containers:\n    - name: app\n      image: busybox:1.37\n"
        "  volumes:\n    {{- include \"sigv4-sidecar.volumes\" $ctx | nindent 4 }}\n")
    try:
        objs = hs.render_objects({}, chart_dir=example_chart, name="shop")
    finally:
        tpl.unlink()
    pod = hs.one(objs, "Pod")
    _, c = hs.sidecar(pod["spec"])
    assert c["image"] == "ghcr.io/example/sigv4-sidecar:9.9.9"
    assert pod["spec"]["volumes"][0]["configMap"]["name"] == "shop-sigv4-sidecar-config"
    hs.validate_k8s(pod, "1.29.0")


# --- the values schema rejects bad values ----------------------------------------------------

def test_schema_accepts_every_good_value_set() -> None:
    """Control for the rejection tests: they fail for the bad value only."""
    with helm.Chart.load(CHART_DIR) as chart:
        for values in [*VALUE_SETS.values(), with_(BASE, config=dict(ALL_TOP_LEVEL, routes=TWO_ROUTES))]:
            chart.validate_schema(chart.merge_values(values))


def test_schema_rejects_missing_upstream() -> None:
    schema_rejects({}, "upstream")


def test_schema_rejects_empty_upstream() -> None:
    schema_rejects(with_(BASE, **{"config.upstream": ""}), "upstream")


def test_schema_rejects_string_replica_count() -> None:
    schema_rejects(with_(BASE, replicaCount="2"), "replicaCount")


def test_schema_rejects_unknown_top_level_key() -> None:
    schema_rejects(with_(BASE, replicas=2), "replicas")


def test_schema_rejects_typo_in_config_key() -> None:
    schema_rejects(with_(BASE, **{"config.roleARN": "arn:aws:iam::111111111111:role/x"}), "roleARN")


@pytest.mark.parametrize("duration", ["30 seconds", "30", "1.5h", "-5s", "10min"])
def test_schema_rejects_bad_duration(duration: str) -> None:
    schema_rejects(with_(BASE, **{"config.requestTimeout": duration}), "requestTimeout")


def test_schema_rejects_bad_duration_in_route() -> None:
    schema_rejects(with_(BASE, **{"config.routes": [dict(TWO_ROUTES[0], roleDuration="1 hour")]}), "roleDuration")


@pytest.mark.parametrize("value", [1.5, "10485760"])
def test_schema_rejects_non_integer_max_body_bytes(value: Any) -> None:
    schema_rejects(with_(BASE, **{"config.maxBodyBytes": value}), "maxBodyBytes")


def test_schema_rejects_bad_listen_address() -> None:
    schema_rejects(with_(BASE, **{"config.listen": "8080"}), "listen")


def test_schema_rejects_out_of_range_app_port() -> None:
    schema_rejects(with_(BASE, **{"app.ports": [{"name": "http", "containerPort": 70000}]}), "containerPort")


def test_schema_rejects_route_without_listen() -> None:
    route = {k: v for k, v in TWO_ROUTES[0].items() if k != "listen"}
    schema_rejects(with_(BASE, **{"config.routes": [route]}), "listen")


def test_schema_rejects_unknown_route_key() -> None:
    schema_rejects(with_(BASE, **{"config.routes": [dict(TWO_ROUTES[0], adminListen="0.0.0.0:9091")]}),
                   "adminListen")


def test_schema_rejects_bad_log_format() -> None:
    schema_rejects(with_(BASE, **{"config.logFormat": "xml"}), "logFormat")


def test_schema_rejects_non_boolean_native_sidecar() -> None:
    schema_rejects(with_(BASE, nativeSidecar="yes"), "nativeSidecar")


# --- the README's worked examples render -----------------------------------------------------

def readme_value_files() -> list[str]:
    text = (CHART_DIR / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return [b for b in blocks if b.startswith("config:")]


def test_readme_has_value_examples() -> None:
    assert len(readme_value_files()) >= 2


@pytest.mark.parametrize("index", range(2))
def test_readme_value_examples_render_and_validate(index: int) -> None:
    values = yaml.safe_load(readme_value_files()[index])
    objs = hs.render_objects(values)
    for obj in objs:
        hs.validate_k8s(obj, "1.29.0")
    cfg = config(objs)
    assert cfg["upstream"] == values["config"]["upstream"]


def test_readme_routes_example_matches_the_rendered_toml() -> None:
    text = (CHART_DIR / "README.md").read_text()
    documented = tomllib.loads(re.findall(r"```toml\n(.*?)```", text, re.S)[0])
    routes_values = next(yaml.safe_load(b) for b in readme_value_files() if "routes:" in b)
    assert config(hs.render_objects(routes_values)) == documented


def test_schema_rejects_unquoted_numeric_image_tag() -> None:
    schema_rejects(with_(BASE, **{"image.tag": 1.1}), "tag")
