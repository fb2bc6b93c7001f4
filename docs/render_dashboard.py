#!/usr/bin/env python3
"""Draws the main panels of the Grafana dashboard (helm/sigv4-sidecar/files/dashboard.json)
into a PNG, from the dashboard's own queries run against a Prometheus (/api/v1/query_range).
No Grafana runs here, so this stands in for a screenshot in the README.

Needs matplotlib (not a project dependency: use a throwaway venv). The README's picture came
from a local run:

  python3 -m venv /tmp/mpl && /tmp/mpl/bin/pip install matplotlib
  .venv/bin/python checks/prometheus_e2e.py --hold 300 --render docs/dashboard.png \\
      --render-python /tmp/mpl/bin/python

which calls this script with --prometheus/--start/--end of that run.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

DASHBOARD = Path(__file__).resolve().parent.parent / "helm" / "sigv4-sidecar" / "files" / "dashboard.json"
UNITS = {"reqps": "req/s", "s": "seconds", "short": ""}


def query_range(base: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as r:
        body = json.load(r)
    if body["status"] != "success":
        raise SystemExit(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: {{label}} replaced by the series' label value."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()
    return text.replace("arn:aws:iam::", "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--end", type=float, required=True)
    ap.add_argument("--rate-window", default="1m", help="stands in for $__rate_interval")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    panels = json.loads(DASHBOARD.read_text())["panels"]
    step = max(5.0, (args.end - args.start) / 300)
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(18, 4.2 * rows), squeeze=False)
    fig.suptitle(f"sigv4-sidecar dashboard: local run ({(args.end - args.start) / 60:.0f} min, "
                 f"scrape 1 s, rate window {args.rate_window}, times UTC)", fontsize=14)
    for ax, panel in zip(axes.flat, panels):
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        drawn = 0
        for target in panel["targets"]:
            expr = (target["expr"].replace("$__rate_interval", args.rate_window)
                    .replace("$job", ".*").replace("$route", ".*"))
            for series in query_range(args.prometheus, expr, args.start, args.end, step):
                xs = [datetime.fromtimestamp(float(t), timezone.utc) for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                if unit == "s" and "histogram_quantile" in expr:
                    ys = [y * 1000 for y in ys]
                ax.plot(xs, ys, linewidth=1.2, label=legend(target.get("legendFormat", ""), series["metric"]))
                drawn += 1
        ax.set_title(panel["title"], fontsize=11)
        quantiles = any("histogram_quantile" in t["expr"] for t in panel["targets"])
        ax.set_ylabel("ms" if unit == "s" and quantiles else UNITS.get(unit, unit))
        ax.set_xlim(datetime.fromtimestamp(args.start, timezone.utc), datetime.fromtimestamp(args.end, timezone.utc))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone.utc))
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data in this run", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        ax.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
