"""The chart's alerts (issue 15): files/alerts.yaml rendered through the chart, checked with
`promtool check rules`, and unit-tested with `promtool test rules` (checks/alerts.test.yaml:
synthetic series for which each alert fires and ones for which it stays silent). Controls
move each threshold just past a silent edge case and expect promtool to fail, so the edge
cases are real edges. Plus the PrometheusRule and dashboard ConfigMap templates."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helm_support as hs  # noqa: E402
from helm_support import CHART_DIR, NAMESPACE, RELEASE, UPSTREAM  # noqa: E402

BASE: dict[str, Any] = {"config": {"upstream": UPSTREAM}}
TESTS = Path(__file__).resolve().parent / "alerts.test.yaml"
README = hs.REPO / "README.md"
ALERTS = ["SigV4SidecarCredentialsExpiring", "SigV4SidecarCredentialRefreshFailing",
          "SigV4SidecarUpstreamAuthFailures", "SigV4SidecarErrorAnswers", "SigV4SidecarHighLatency"]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing (Debian package `prometheus`; scripts/test installs it)")
    return path


def with_rule(**alerts: dict[str, Any]) -> dict[str, Any]:
    vals = copy.deepcopy(BASE)
    vals["metrics"] = {"prometheusRule": {"enabled": True, "alerts": alerts}}
    return vals


def run_promtool_tests(tmp_path: Path, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    hs.write_rules(tmp_path / "rules.yaml", values)
    shutil.copy(TESTS, tmp_path / TESTS.name)
    return subprocess.run([promtool(), "test", "rules", TESTS.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def alert_rules(values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in hs.rules(values)["groups"] for r in g["rules"]}


# --- promtool ------------------------------------------------------------------------------

def test_promtool_check_rules(tmp_path: Path) -> None:
    path = hs.write_rules(tmp_path / "rules.yaml")
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    out = run_promtool_tests(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_tests_cover_every_alert() -> None:
    tested = {t["alertname"] for case in yaml.safe_load(TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    assert tested == set(ALERTS) == set(alert_rules())


# Each threshold moved just past one of the silent edge cases of alerts.test.yaml: that case
# now fires, so the unit tests must fail, naming the alert.
@pytest.mark.parametrize(("alert", "key", "value"), [
    ("credentialsExpiring", "thresholdSeconds", 301),      # "at-threshold" (exactly 300 s left)
    ("refreshFailing", "minFailures", 2),                  # "flaky" (2 failures in 10m)
    ("upstreamAuthFailures", "ratio", 0.048),              # route search at 4.9 %
    ("sidecarErrors", "ratio", 0.048),                     # route search at 4.9 % per code
    ("latency", "p99Seconds", 0.99),                       # route search at p99 0.9975 s
])
def test_promtool_tests_fail_when_a_threshold_moves(tmp_path: Path, alert: str, key: str, value: Any) -> None:
    out = run_promtool_tests(tmp_path, with_rule(**{alert: {key: value}}))
    assert out.returncode != 0, out.stdout
    name = ALERTS[["credentialsExpiring", "refreshFailing", "upstreamAuthFailures", "sidecarErrors",
                   "latency"].index(alert)]
    assert f"alertname: {name}," in out.stdout + out.stderr


def test_promtool_tests_fail_when_for_is_shorter(tmp_path: Path) -> None:
    out = run_promtool_tests(tmp_path, with_rule(latency={"for": "5m"}))
    assert out.returncode != 0, out.stdout
    assert "alertname: SigV4SidecarHighLatency, time: 10m" in out.stdout + out.stderr


# --- the PrometheusRule ----------------------------------------------------------------------

def test_prometheus_rule_off_by_default() -> None:
    assert "PrometheusRule" not in hs.kinds(hs.render_objects(BASE))


def test_prometheus_rule_object() -> None:
    vals = copy.deepcopy(BASE)
    vals["metrics"] = {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}
    pr = hs.one(hs.render_objects(vals), "PrometheusRule")
    assert pr["apiVersion"] == "monitoring.coreos.com/v1"
    assert pr["metadata"]["name"] == f"{RELEASE}-sigv4-sidecar"
    assert pr["metadata"]["namespace"] == NAMESPACE
    assert pr["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pr["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert hs.validate_k8s(pr, "1.29.0") == "PrometheusRule subset schema"
    vals["metrics"]["prometheusRule"]["namespace"] = "monitoring"
    assert hs.one(hs.render_objects(vals), "PrometheusRule")["metadata"]["namespace"] == "monitoring"


def test_prometheus_rule_subset_schema_catches_typos() -> None:
    pr = copy.deepcopy(hs.one(hs.render_objects(with_rule()), "PrometheusRule"))
    rule = pr["spec"]["groups"][0]["rules"][0]
    rule["annotation"] = rule.pop("annotations")
    with pytest.raises(Exception, match="annotation"):
        hs.validate_k8s(pr, "1.29.0")


def test_every_alert_has_summary_description_and_a_runbook_in_the_readme() -> None:
    readme = README.read_text()
    # GitHub's anchor of a heading: lower case, spaces to dashes, punctuation dropped.
    anchors = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    for name, rule in alert_rules().items():
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], name
        base, anchor = ann["runbook_url"].split("#")
        assert base == "https://github.com/example/sigv4-sidecar/blob/main/README.md"
        assert anchor == name.lower() and anchor in anchors, (name, anchor)
        assert rule["labels"]["severity"] in {"warning", "critical"}


def test_thresholds_durations_and_labels_come_from_values() -> None:
    vals = with_rule(credentialsExpiring={"thresholdSeconds": 900, "for": "2m", "severity": "page"},
                     refreshFailing={"window": "30m", "minFailures": 7},
                     upstreamAuthFailures={"window": "15m", "ratio": 0.2},
                     sidecarErrors={"codes": "credentials_unavailable|overloaded", "ratio": 0.01, "for": "1h"},
                     latency={"p99Seconds": 2.5, "window": "10m"})
    vals["metrics"]["prometheusRule"].update(additionalLabels={"team": "orders"},
                                             runbookBaseUrl="https://wiki.example.com/sigv4",
                                             aggregationLabels=["cluster", "namespace"])
    rules = alert_rules(vals)
    exp = rules["SigV4SidecarCredentialsExpiring"]
    assert exp["expr"].endswith("< 900") and exp["for"] == "2m" and exp["labels"]["severity"] == "page"
    assert "(threshold 900s)" in exp["annotations"]["description"]
    ref = rules["SigV4SidecarCredentialRefreshFailing"]["expr"]
    assert ref.count("[30m]") == 2 and ">= 7" in ref
    auth = rules["SigV4SidecarUpstreamAuthFailures"]["expr"]
    assert auth.count("[15m]") == 2 and auth.rstrip().endswith("> 0.2")
    assert "sum by (cluster, namespace, route, reason)" in auth and "on (cluster, namespace, route)" in auth
    err = rules["SigV4SidecarErrorAnswers"]
    assert 'error=~"credentials_unavailable|overloaded"' in err["expr"] and err["for"] == "1h"
    lat = rules["SigV4SidecarHighLatency"]["expr"]
    assert "[10m]" in lat and lat.rstrip().endswith("> 2.5")
    for name, rule in rules.items():
        assert rule["labels"]["team"] == "orders", name
        assert rule["annotations"]["runbook_url"] == f"https://wiki.example.com/sigv4#{name.lower()}"


def test_empty_aggregation_labels_sum_per_route(tmp_path: Path) -> None:
    vals = with_rule()
    vals["metrics"]["prometheusRule"]["aggregationLabels"] = []
    lat = alert_rules(vals)["SigV4SidecarHighLatency"]["expr"]
    assert "sum by (route, le)" in lat
    path = hs.write_rules(tmp_path / "rules.yaml", vals)
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_alert_can_be_switched_off() -> None:
    rules = alert_rules(with_rule(latency={"enabled": False}))
    assert set(rules) == set(ALERTS) - {"SigV4SidecarHighLatency"}


@pytest.mark.parametrize(("change", "match"), [
    ({"latency": {"for": "10 minutes"}}, "for"),
    ({"sidecarErrors": {"ratio": 5}}, "ratio"),
    ({"refreshFailing": {"window": ""}}, "window"),
    ({"credentialsExpiring": {"thresholdSeconds": "300"}}, "thresholdSeconds"),
    ({"latency": {"p99Seconds": 0}}, "p99Seconds"),
    ({"latency": {"p99": 1}}, "p99"),
    ({"sidecarErrors": {"codes": 'a"b'}}, "codes"),
])
def test_schema_rejects_bad_alert_values(change: dict[str, Any], match: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=match):
        hs.render(CHART_DIR, with_rule(**change))


def test_schema_rejects_unknown_prometheus_rule_key() -> None:
    vals = with_rule()
    vals["metrics"]["prometheusRule"]["thresholds"] = {}
    with pytest.raises(helm.HelmValuesError, match="thresholds"):
        hs.render(CHART_DIR, vals)


# --- the Grafana dashboard ConfigMap ----------------------------------------------------------

DASHBOARD = CHART_DIR / "files" / "dashboard.json"


def dashboard_configmaps(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in hs.render_objects(values)
            if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]


def test_dashboard_configmap_off_by_default() -> None:
    assert dashboard_configmaps(BASE) == []


@pytest.mark.parametrize("version", hs.k8s_versions())
def test_dashboard_configmap_holds_the_dashboard(version: str) -> None:
    vals = copy.deepcopy(BASE)
    vals["metrics"] = {"grafanaDashboard": {"enabled": True}}
    [cm] = dashboard_configmaps(vals)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert json.loads(cm["data"]["sigv4-sidecar.json"]) == json.loads(DASHBOARD.read_text())
    hs.validate_k8s(cm, version)
    vals["metrics"]["grafanaDashboard"].update(label="dashboards.example.com/load", labelValue="yes",
                                               namespace="monitoring", annotations={"grafana_folder": "AWS"})
    [cm] = dashboard_configmaps(vals)
    assert cm["metadata"]["labels"]["dashboards.example.com/load"] == "yes"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "AWS"}


def test_dashboard_uses_a_datasource_variable_only() -> None:
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = dash["panels"]
    assert len(panels) >= 8
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert t["expr"].startswith(("sum", "histogram_quantile", "min", "count")), t["expr"]
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    # Every exported metric of SPEC's table has a panel (build_info: the versions panel).
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in ["requests_total", "request_duration_seconds_bucket", "upstream_duration_seconds_bucket",
                   "errors_total", "inflight_requests", "credentials_refresh_total",
                   "credentials_expiry_timestamp_seconds", "upstream_auth_failures_total", "build_info"]:
        assert f"sigv4_sidecar_{metric}" in exprs, metric


def test_readme_example_renders() -> None:
    """The project README's values example for alerts and dashboard is valid and does what it says."""
    section = README.read_text().split("## Alerts and dashboard", 1)[1]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    objs = hs.render_objects(dict(BASE, **example))
    for obj in objs:
        hs.validate_k8s(obj, "1.29.0")
    pr = hs.one(objs, "PrometheusRule")
    rules = {r["alert"]: r for r in pr["spec"]["groups"][0]["rules"]}
    assert rules["SigV4SidecarHighLatency"]["expr"].rstrip().endswith("> 0.5")
    assert all(r["labels"]["team"] == "orders" for r in rules.values())
    assert len(dashboard_configmaps(dict(BASE, **example))) == 1
