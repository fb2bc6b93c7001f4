"""The configuration the Helm chart renders: the TOML keys mirror SPEC's table and the values,
unset values stay out, the checksum annotation follows the file, and the real binary accepts
what the chart renders (`sigv4-sidecar --check`). The rest of the chart: test_helm.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helm_support as hs  # noqa: E402
from helm_support import ALL_TOP_LEVEL, BASE, CHART_DIR, TWO_ROUTES, UPSTREAM, VALUE_SETS  # noqa: E402
from helm_support import config, config_toml, deployment, schema_rejects, with_  # noqa: E402


# --- the rendered TOML -----------------------------------------------------------------------

def spec_config_keys() -> list[str] | None:
    """Configuration keys from the SPEC's tables (the configuration table and the route keys of
    "Reaching private endpoints and other services"), when ../shared/SPEC.md is there."""
    for spec in (hs.REPO.parent / "shared" / "SPEC.md", Path("/work/shared/SPEC.md")):
        if spec.is_file():
            text = spec.read_text()
            keys: list[str] = []
            for heading in ("## Configuration", "## Reaching private endpoints"):
                section = text.split(heading, 1)[1].split("\n## ", 1)[0]
                for line in section.splitlines():
                    m = re.match(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \|", line)
                    if m:
                        keys += re.findall(r"`([a-z_]+)`", m.group(1))
            return keys
    return None


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.capitalize() for w in rest)


# Keys the binary has beyond SPEC's table (the pod-protecting limits; README, reliability).
EXTRA_KEYS = {"maxConnections", "maxInflightBodyBytes", "maxHeaderBytes", "headerReadTimeout"}


def test_values_mirror_the_spec_keys() -> None:
    """Every SPEC configuration key is a documented config.<camelCase> value and a schema
    property, and the schema knows no other keys."""
    keys = spec_config_keys()
    if keys is None:
        pytest.skip("shared/SPEC.md is not beside the repository")
    assert "upstream" in keys and "max_body_bytes" in keys and "log_level" in keys
    assert "connect" in keys and "client_authorization_to" in keys
    expected = {camel(k) for k in keys} | {"routes"} | EXTRA_KEYS
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert set(schema["properties"]["config"]["properties"]) == expected
    assert set(ALL_TOP_LEVEL) == expected - {"routes"}
    values_text = (CHART_DIR / "values.yaml").read_text()
    for k in expected:
        assert re.search(rf"^  #? ?{k}:", values_text, re.M), f"config.{k} is not in values.yaml"
    defaults = yaml.safe_load(values_text)["config"]
    assert "upstream" not in defaults, "upstream must come from the user (required by the schema)"


def test_toml_has_only_upstream_by_default() -> None:
    toml_text = config_toml(hs.render_objects(BASE))
    assert tomllib.loads(toml_text) == {"upstream": UPSTREAM}
    assert '""' not in toml_text


def test_toml_has_exactly_the_keys_set_in_values() -> None:
    cfg = config(hs.render_objects(with_(BASE, config=dict(ALL_TOP_LEVEL, routes=TWO_ROUTES))))
    expected = {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): v for k, v in ALL_TOP_LEVEL.items()}
    routes = cfg.pop("routes")
    assert cfg == expected
    assert isinstance(cfg["max_body_bytes"], int)
    assert cfg["external_id"] == 'ext-"quoted"\\slash'
    assert routes == [
        {"name": "search", "listen": "127.0.0.1:8081",
         "upstream": "https://search-logs-xyz.eu-west-1.es.amazonaws.com",
         "region": "eu-west-1", "service": "es",
         "role_arn": "arn:aws:iam::222222222222:role/search-reader"},
        {"name": "fn-url", "listen": "127.0.0.1:8082",
         "upstream": "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws",
         "max_body_bytes": 1048576, "request_timeout": "10s"},
    ]


def test_reach_keys_render_on_routes_and_lists_as_toml_arrays() -> None:
    route = {"name": "lattice", "listen": "127.0.0.1:8083",
             "upstream": "https://svc-0123.0123.vpc-lattice-svcs.us-west-2.on.aws",
             "connect": "10.0.0.7:443", "payload": "unsigned", "signingAlgorithm": "sigv4a",
             "regionSet": "*", "unsignedHeaders": ["x-b3-traceid"],
             "clientAuthorizationTo": "x-original-authorization"}
    cfg = config(hs.render_objects(with_(BASE, **{"config.unsignedHeaders": ["x-edge-hop"],
                                                  "config.routes": [route]})))
    assert cfg["unsigned_headers"] == ["x-edge-hop"]
    assert cfg["routes"][0] == {"name": "lattice", "listen": "127.0.0.1:8083",
                                "upstream": route["upstream"], "connect": "10.0.0.7:443",
                                "payload": "unsigned", "signing_algorithm": "sigv4a",
                                "region_set": "*", "unsigned_headers": ["x-b3-traceid"],
                                "client_authorization_to": "x-original-authorization"}


@pytest.mark.parametrize("change", [
    {"config.payload": "streamed"},
    {"config.signingAlgorithm": "sigv4b"},
    {"config.unsignedHeaders": "x-a"},
    {"config.unsignedHeaders": ["bad header"]},
    {"config.connect": "https://vpce.example/"},
])
def test_schema_rejects_bad_reach_values(change: dict[str, Any]) -> None:
    schema_rejects(with_(BASE, **change), next(iter(change)).split(".")[-1])


def test_toml_routes_are_an_array_of_tables() -> None:
    text = config_toml(hs.render_objects(VALUE_SETS["two-routes"]))
    assert text.count("[[routes]]") == 2
    cfg = tomllib.loads(text)
    assert [r["name"] for r in cfg["routes"]] == ["search", "fn-url"]
    assert cfg["role_arn"] == "arn:aws:iam::111111111111:role/orders-caller"


@pytest.mark.parametrize("unset", [None, ""])
def test_toml_omits_unset_values(unset: Any) -> None:
    cfg = config(hs.render_objects(with_(BASE, **{"config.region": unset, "config.maxBodyBytes": None,
                                                  "config.roleArn": unset})))
    assert cfg == {"upstream": UPSTREAM}


def test_zero_is_a_value_not_unset() -> None:
    cfg = config(hs.render_objects(with_(BASE, **{"config.maxBodyBytes": 0})))
    assert cfg["max_body_bytes"] == 0


# --- checksum annotation ---------------------------------------------------------------------

def checksum(values: dict[str, Any]) -> str:
    return deployment(hs.render_objects(values))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_checksum_is_the_hash_of_the_config_file() -> None:
    objs = hs.render_objects(VALUE_SETS["two-routes"])
    data = config_toml(objs)
    annotation = deployment(objs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert data.endswith("\n")
    assert annotation == hashlib.sha256(data[:-1].encode()).hexdigest()


@pytest.mark.parametrize("change", [
    {"config.upstream": "https://other.execute-api.us-east-1.amazonaws.com/Prod"},
    {"config.roleArn": "arn:aws:iam::111111111111:role/other"},
    {"config.logLevel": "debug"},
    {"config.routes": TWO_ROUTES[:1]},
])
def test_checksum_changes_when_config_changes(change: dict[str, Any]) -> None:
    assert checksum(with_(BASE, **change)) != checksum(BASE)


def test_checksum_stable_when_config_does_not_change() -> None:
    assert checksum(with_(BASE, replicaCount=4, **{"image.tag": "0.1.1"})) == checksum(BASE)


BINARY = hs.REPO / "target" / "release" / "sigv4-sidecar"


@pytest.mark.parametrize("value_set", ["every key", "two routes"])
def test_rendered_config_is_accepted_by_the_real_binary(value_set: str, tmp_path: Path) -> None:
    """The chart and the binary agree: the TOML the chart renders passes `sigv4-sidecar --check`
    (built by scripts/test before this runs), and a typo the binary refuses is caught here."""
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} is missing: run `cargo build --release -p sigv4-sidecar` first")
    cfg = {k: v for k, v in ALL_TOP_LEVEL.items() if k != "caFile"}
    if value_set == "two routes":
        cfg["routes"] = [
            {"name": "search", "listen": "127.0.0.1:8081",
             "upstream": "https://search-logs-xyz.eu-west-1.es.amazonaws.com",
             "roleArn": "arn:aws:iam::222222222222:role/search-reader"},
            {"name": "fn", "listen": "127.0.0.1:8082",
             "upstream": "https://abcdefg.lambda-url.us-west-2.on.aws", "requestTimeout": "5s"},
            {"name": "lattice", "listen": "127.0.0.1:8083",
             "upstream": "https://orders-0a1b2c3d4e5f60789.7d67968.vpc-lattice-svcs.us-west-2.on.aws",
             "signingAlgorithm": "sigv4", "unsignedHeaders": ["x-b3-traceid"]},
        ]
    toml_text = config_toml(hs.render_objects({"config": cfg}))
    path = tmp_path / "config.toml"
    path.write_text(toml_text)
    env = {"PATH": os.environ.get("PATH", "")}
    ok = subprocess.run([str(BINARY), "--check", "--config", str(path)], env=env,
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    routes = [line for line in ok.stdout.splitlines() if line.startswith("route ")]
    assert len(routes) == 1 + len(cfg.get("routes", [])), ok.stdout
    # The reach keys arrive as the binary reads them (inferred and inherited ones included).
    assert "connect vpce-0abc123-de4f5g6h.execute-api.us-east-1.vpce.amazonaws.com:443" in routes[0], ok.stdout
    assert "sigv4a over us-east-1,us-west-2" in routes[0] and "x-cdn-id" in routes[0], ok.stdout
    assert "app Authorization -> x-original-authorization" in routes[0], ok.stdout
    if value_set == "two routes":
        assert "service vpc-lattice-svcs" in routes[3] and "payload unsigned" in routes[3], ok.stdout
        assert ", sigv4," in routes[3] and "x-b3-traceid" in routes[3], ok.stdout
    path.write_text(toml_text + "\nmax_conections = 1\n")
    bad = subprocess.run([str(BINARY), "--check", "--config", str(path)], env=env,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "max_conections" in bad.stderr, bad.stderr
