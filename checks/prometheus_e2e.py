#!/usr/bin/env python3
"""The dashboard and the alerts against a real Prometheus scraping a real sidecar (issue 15).

Starts the local path (`scripts/local`: sidecar + STS emulator + IAM-checking gateway on
loopback), starts Debian's `prometheus` on 127.0.0.1 with a temporary storage directory,
scraping the sidecar's admin port every second and loading the alert rules as the chart
renders them, sends traffic in two rounds (signed 200s, and requests the sidecar refuses: 413,
400, 405), waits until Prometheus has scraped each round (through its HTTP API, no blind
sleeps), then evaluates through /api/v1/query:

- every dashboard expression (files/dashboard.json, Grafana variables set to "All"): all must
  parse, and every panel must return finite data except upstream auth failures (which need a
  403 from the upstream); the request and error panels must show the codes that were sent;
  the expiry panel a lifetime within the local stack's 15 minutes;
- every template variable query (label_values) must find values;
- every alert expression with the chart's default values must parse, and Prometheus itself
  must have evaluated every loaded rule without error;
- the same rules rendered with hair-trigger values: the expiry, error-answer and latency alerts
  must match the real series (so their metric and label names are the exported ones), and the
  refresh-failure alert must not (every refresh succeeded).

Run by scripts/test after `scripts/local --smoke` (binaries built by then). Needs the ports of
scripts/local (8080, 9090, 4566, 4567) free.

  checks/prometheus_e2e.py                      the check
  checks/prometheus_e2e.py --hold 300 --render docs/dashboard.png --render-python PY
                                                then steady traffic for 300 s and the README's
                                                picture, drawn by docs/render_dashboard.py run
                                                with PY (a Python that has matplotlib)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helm_support as hs  # noqa: E402

REPO = hs.REPO
DASHBOARD = hs.CHART_DIR / "files" / "dashboard.json"
PROXY, ADMIN = 8080, 9090
LOCAL_PORTS = (PROXY, ADMIN, 4566, 4567)
JOB = "sigv4-sidecar"
DEMO_ROLE = "arn:aws:iam::111111111111:role/sigv4-sidecar-demo"
# Rate window standing in for Grafana's $__rate_interval: several 1 s scrapes, short enough
# that both traffic rounds and nothing else decide the result.
RATE_WINDOW = "30s"
# Panels that may legitimately be empty after this traffic: the counter needs an upstream 403
# with an AWS signature or token error, which a correctly signing sidecar does not cause.
MAY_BE_EMPTY = ("sigv4_sidecar_upstream_auth_failures_total",)
# Values under which the alerts match a healthy local run (windows fit the run's length).
HAIR_TRIGGER = {
    "credentialsExpiring": {"thresholdSeconds": 86400},
    "refreshFailing": {"window": RATE_WINDOW, "minFailures": 1},
    "upstreamAuthFailures": {"window": RATE_WINDOW, "ratio": 0},
    "sidecarErrors": {"window": RATE_WINDOW, "ratio": 0.001},
    "latency": {"window": RATE_WINDOW, "p99Seconds": 0.000001},
}
MUST_MATCH = {"SigV4SidecarCredentialsExpiring", "SigV4SidecarErrorAnswers", "SigV4SidecarHighLatency"}
MUST_NOT_MATCH = {"SigV4SidecarCredentialRefreshFailing"}


class CheckFailed(Exception):
    pass


def log(msg: str) -> None:
    print(f"prometheus-e2e: {msg}", flush=True)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0, alive: Callable[[], None] | None = None) -> Any:
    """Polls probe() until it returns something truthy (a readiness signal, not a sleep)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if alive:
            alive()
        try:
            last = probe()
            if last:
                return last
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.2)
    raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- traffic -------------------------------------------------------------------------------

def raw_request(head: str) -> int:
    """Sends one request head to the proxy port as written and returns the status code."""
    with socket.create_connection(("127.0.0.1", PROXY), timeout=10) as s:
        s.sendall(head.encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def traffic_round(ok: int = 8) -> dict[str, int]:
    """Signed requests that succeed, and requests the sidecar answers itself. Returns the
    number of answers per status code (each checked)."""
    sent: dict[str, int] = {}

    def expect(status: int, want: int, what: str) -> None:
        if status != want:
            raise CheckFailed(f"{what}: expected {want}, got {status}")
        sent[str(status)] = sent.get(str(status), 0) + 1

    for _ in range(ok):
        expect(http_status(f"http://127.0.0.1:{PROXY}/hello-world"), 200, "signed GET /hello-world")
    for _ in range(2):  # declared body above max_body_bytes: refused before anything goes upstream
        expect(raw_request(f"POST /hello-world HTTP/1.1\r\nHost: x\r\nContent-Length: {11 * 1024 * 1024}\r\n\r\n"),
               413, "oversized body")
    expect(raw_request("GET http://other.example/ HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n"),
           400, "absolute-form target")
    expect(raw_request("CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\nConnection: close\r\n\r\n"),
           405, "CONNECT")
    return sent


def steady_traffic(seconds: float) -> None:
    """For the picture: a few requests a second from two clients, with some refusals."""
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        i = 0
        while time.monotonic() < stop:
            i += 1
            if n == 0 and i % 40 == 0:
                raw_request(f"POST /hello-world HTTP/1.1\r\nHost: x\r\nContent-Length: {11 * 1024 * 1024}\r\n\r\n")
            elif n == 1 and i % 90 == 0:
                raw_request("CONNECT other.example:443 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            else:
                http_status(f"http://127.0.0.1:{PROXY}/hello-world")
            time.sleep(0.1 + 0.1 * n)  # pacing the load, not waiting for anything

    threads = [threading.Thread(target=client, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --- Prometheus ----------------------------------------------------------------------------

class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:  # 400/422: a query that does not parse or evaluate
            body = json.load(e)
        return body

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", **params)

    def scalar_sum(self, expr: str) -> float | None:
        res = self.query(f"sum({expr})")
        if res.get("status") != "success" or not res["data"]["result"]:
            return None
        return float(res["data"]["result"][0]["value"][1])


def grafana_to_promql(expr: str) -> str:
    """What Grafana sends for the dashboard's variables set to "All" (allValue .*)."""
    return (expr.replace("$__rate_interval", RATE_WINDOW)
            .replace("$job", ".*").replace("$route", ".*"))


def dashboard_targets() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def variable_queries() -> list[tuple[str, str, str]]:
    """(name, metric selector, label) of every label_values() template variable."""
    out = []
    for v in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        inner = q.strip()
        if not inner.startswith("label_values(") or not inner.endswith(")"):
            raise CheckFailed(f"variable {v['name']}: unsupported query {q!r}")
        selector, _, label = inner[len("label_values("):-1].rpartition(",")
        out.append((v["name"], selector.strip(), label.strip()))
    return out


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    vals = [float(r["value"][1]) for r in result]
    return [v for v in vals if math.isfinite(v)]


def check_dashboard(prom: Prometheus, at: float, sent: dict[str, int]) -> list[str]:
    failures: list[str] = []
    report: list[str] = []
    for title, expr in dashboard_targets():
        promql = grafana_to_promql(expr)
        res = prom.query(promql, at)
        if res.get("status") != "success":
            failures.append(f"panel {title!r}: {promql}: {res.get('errorType')}: {res.get('error')}")
            continue
        result = res["data"]["result"]
        vals = finite_values(result)
        report.append(f"  {len(result):2d} series  {title}: {promql[:90]}")
        if not vals and not any(m in expr for m in MAY_BE_EMPTY):
            failures.append(f"panel {title!r} returns no finite data: {promql} -> {result}")
        if "sigv4_sidecar_requests_total" in expr:
            codes = {r["metric"].get("code") for r in result if float(r["value"][1]) > 0}
            if not set(sent) <= codes:
                failures.append(f"panel {title!r}: codes {sorted(codes)} lack some of {sorted(sent)}")
        if "sigv4_sidecar_errors_total" in expr:
            errors = {r["metric"].get("error") for r in result if float(r["value"][1]) > 0}
            want = {"payload_too_large", "bad_request", "method_not_allowed"}
            if not want <= errors:
                failures.append(f"panel {title!r}: error codes {sorted(errors)} lack some of {sorted(want)}")
        if "credentials_expiry_timestamp_seconds" in expr:
            left = {r["metric"].get("role_arn"): float(r["value"][1]) for r in result}
            if not 0 < left.get(DEMO_ROLE, -1) <= 15 * 60:
                failures.append(f"panel {title!r}: time left {left} is not within the 15 min lifetime")
    for name, selector, label in variable_queries():
        promql = f"count by ({label}) ({grafana_to_promql(selector)})"
        res = prom.query(promql, at)
        values = [r["metric"].get(label) for r in res.get("data", {}).get("result", [])]
        report.append(f"  variable {name}: {values}")
        if res.get("status") != "success" or not all(values) or not values:
            failures.append(f"variable {name}: {promql} -> {res}")
    print("\n".join(report), flush=True)
    return failures


def alert_exprs(values: dict[str, Any] | None) -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in hs.rules(values)["groups"] for r in g["rules"]}


def check_alerts(prom: Prometheus, at: float) -> list[str]:
    failures: list[str] = []
    defaults = alert_exprs(None)
    for name, expr in defaults.items():
        res = prom.query(expr, at)
        status = res.get("status")
        print(f"  default  {name}: {status}, {len(res.get('data', {}).get('result', []))} series", flush=True)
        if status != "success":
            failures.append(f"alert {name} (defaults): {res.get('errorType')}: {res.get('error')}")
    vals = {"config": {"upstream": hs.UPSTREAM},
            "metrics": {"prometheusRule": {"alerts": copy.deepcopy(HAIR_TRIGGER)}}}
    for name, expr in alert_exprs(vals).items():
        res = prom.query(expr, at)
        result = res.get("data", {}).get("result", [])
        print(f"  trigger  {name}: {res.get('status')}, {len(result)} series "
              f"{[r['metric'] for r in result][:3]}", flush=True)
        if res.get("status") != "success":
            failures.append(f"alert {name} (hair-trigger): {res.get('errorType')}: {res.get('error')}")
        elif name in MUST_MATCH and not result:
            failures.append(f"alert {name} with hair-trigger values matches nothing: {expr}")
        elif name in MUST_NOT_MATCH and result:
            failures.append(f"alert {name} matches a healthy run: {result}")
        if name == "SigV4SidecarErrorAnswers" and result:
            errors = {r["metric"].get("error") for r in result}
            if "payload_too_large" not in errors or any(r["metric"].get("route") != "default" for r in result):
                failures.append(f"alert {name}: unexpected series {result}")
    return failures


def check_loaded_rules(prom: Prometheus) -> list[str]:
    """Prometheus evaluated every rule of the rendered file, without error."""
    def evaluated() -> list[dict[str, Any]] | None:
        groups = prom.api("rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        # Go's zero time until the first evaluation; this Prometheus started empty.
        done = all(not r.get("lastEvaluation", "0001").startswith("0001") for r in rules)
        return rules if rules and done else None

    rules = wait_for("every rule evaluated once", evaluated, timeout=30)
    names = {r["name"] for r in rules}
    print(f"  loaded rules: {len(rules)}, health {sorted({r['health'] for r in rules})}", flush=True)
    failures = [f"rule {r['name']}: health {r['health']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
    if names != set(alert_exprs(None)):
        failures.append(f"loaded rules {sorted(names)} differ from the chart's")
    return failures


# --- processes -----------------------------------------------------------------------------

class Processes:
    """Starts children in their own process groups; stops exactly those at the end."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], logfile: Path, **kw: Any) -> subprocess.Popen[bytes]:
        out = logfile.open("wb")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw)
        self.procs.append((name, p))
        return p

    def alive(self, name: str, logfile: Path) -> Callable[[], None]:
        p = dict(self.procs)[name]

        def check() -> None:
            if p.poll() is not None:
                raise CheckFailed(f"{name} exited with {p.returncode}:\n{logfile.read_text()[-3000:]}")
        return check

    def stop_all(self) -> None:
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # scripts/local's trap stops its own children
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    log(f"{name} ignored SIGTERM; killing its process group {p.pid}")
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


def main() -> int:
    global DASHBOARD
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dashboard", type=Path, default=DASHBOARD,
                    help="dashboard JSON to check (default: the chart's; another one is for controls)")
    ap.add_argument("--hold", type=float, default=0, help="after the checks, steady traffic for this many seconds")
    ap.add_argument("--render", type=Path, help="then draw the dashboard into this PNG (docs/render_dashboard.py)")
    ap.add_argument("--render-python", default=sys.executable, help="Python with matplotlib for --render")
    args = ap.parse_args()
    DASHBOARD = args.dashboard

    prometheus = subprocess.run(["sh", "-c", "command -v prometheus"], capture_output=True, text=True).stdout.strip()
    if not prometheus:
        raise CheckFailed("prometheus is missing (Debian package `prometheus`; scripts/test installs it)")
    busy = [p for p in LOCAL_PORTS if port_in_use(p)]
    if busy:
        raise CheckFailed(f"ports {busy} are in use (another scripts/local?); the local path needs them free")

    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="sigv4-prom-e2e-") as tmp_s:
        tmp = Path(tmp_s)
        try:
            local_log = tmp / "local.log"
            procs.start("scripts/local", [str(REPO / "scripts" / "local")], local_log, cwd=REPO)
            local_alive = procs.alive("scripts/local", local_log)
            wait_for("the sidecar's /readyz", lambda: http_status(f"http://127.0.0.1:{ADMIN}/readyz") == 200,
                     timeout=300, alive=local_alive)
            log("local path ready")

            hs.write_rules(tmp / "rules.yaml")
            port = free_port()
            (tmp / "prometheus.yml").write_text(json.dumps({
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": ["rules.yaml"],
                "scrape_configs": [{"job_name": JOB, "static_configs": [
                    {"targets": [f"127.0.0.1:{ADMIN}"], "labels": {"namespace": "local"}}]}],
            }))
            prom_log = tmp / "prometheus.log"
            procs.start("prometheus", [prometheus, f"--config.file={tmp / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={tmp / 'data'}",
                                       f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                        prom_log, cwd=tmp)
            prom_alive = procs.alive("prometheus", prom_log)
            prom = Prometheus(port)
            wait_for("Prometheus /-/ready", lambda: http_status(f"{prom.base}/-/ready") == 200, alive=prom_alive)
            wait_for("a successful scrape of the admin port",
                     lambda: prom.scalar_sum(f'up{{job="{JOB}"}}') == 1.0, alive=prom_alive)
            log(f"Prometheus on 127.0.0.1:{port} scrapes 127.0.0.1:{ADMIN}")

            sent: dict[str, int] = {}
            total = 0.0
            for n in (1, 2):
                for code, count in traffic_round().items():
                    sent[code] = sent.get(code, 0) + count
                total = float(sum(sent.values()))
                wait_for(f"round {n} in Prometheus ({total:.0f} requests)",
                         lambda: prom.scalar_sum(f'sigv4_sidecar_requests_total{{job="{JOB}"}}') == total,
                         alive=prom_alive)
                log(f"round {n} scraped: {sent}")
            at = time.time()

            log("dashboard expressions:")
            failures = check_dashboard(prom, at, sent)
            log("alert expressions:")
            failures += check_alerts(prom, at)
            failures += check_loaded_rules(prom)
            if failures:
                raise CheckFailed("\n".join(failures))
            log("every dashboard and alert expression parses; panels return data")

            if args.hold > 0:
                t0 = time.time()
                log(f"steady traffic for {args.hold:.0f}s")
                steady_traffic(args.hold)
                if args.render:
                    subprocess.run([args.render_python, str(REPO / "docs" / "render_dashboard.py"),
                                    "--prometheus", prom.base, "--start", f"{t0:.0f}", "--end", f"{time.time():.0f}",
                                    "--rate-window", "1m", "--out", str(args.render)], check=True)
        finally:
            procs.stop_all()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as e:
        print(f"prometheus-e2e: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
