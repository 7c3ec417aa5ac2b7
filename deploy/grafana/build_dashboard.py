#!/usr/bin/env python3
"""Build the servegate Grafana dashboard (deploy/grafana/servegate.json).

The dashboard is generated, not edited by hand: panels are listed once below, laid out on
Grafana's 24-column grid, and written both to ``deploy/grafana/servegate.json`` (to import by
hand) and to the Helm chart's ``dashboards/servegate.json`` (shipped in a ConfigMap for the
Grafana sidecar). ``tests/deploy/test_dashboard.py`` checks that both files are what this
script writes and that every query names a metric the code exports.

    .venv/bin/python deploy/grafana/build_dashboard.py          # rewrite both files
    .venv/bin/python deploy/grafana/build_dashboard.py --check  # exit 1 if they are stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = (ROOT / "deploy" / "grafana" / "servegate.json",
           ROOT / "deploy" / "helm" / "servegate" / "dashboards" / "servegate.json")

DS = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
MODEL = f'{NS}, model=~"$model"'
POOL = f'{NS}, pool=~"$pool"'
RI = "$__rate_interval"


def q(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref,
            "range": True}


def timeseries(title: str, targets: list[dict[str, Any]], unit: str = "short",
               description: str = "", **custom: Any) -> dict[str, Any]:
    for n, t in enumerate(targets):
        t["refId"] = chr(ord("A") + n)
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"fillOpacity": 10, **custom}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def table(title: str, targets: list[dict[str, Any]], description: str = "") -> dict[str, Any]:
    """The current value of each series as a table row, its labels as columns."""
    for n, t in enumerate(targets):
        t.update(refId=chr(ord("A") + n), instant=True, range=False, format="table")
    return {
        "type": "table", "title": title, "description": description, "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
        "transformations": [{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True}}}],
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def quantile(phi: float, by: str) -> str:
    return (f"histogram_quantile({phi}, sum by ({by}, le) "
            f"(rate(servegate_request_duration_seconds_bucket{{{MODEL}}}[{RI}])))")


PANELS: list[dict[str, Any]] = [
    row("Traffic (per model)"),
    timeseries("Requests per second", [
        q(f"sum by (model) (rate(servegate_requests_total{{{MODEL}}}[{RI}]))", "{{model}}"),
    ], unit="reqps", description="Requests answered by Triton through the gateway, REST and gRPC."),
    timeseries("Error rate", [
        q(f'sum by (model) (rate(servegate_requests_total{{{MODEL}, code_class="5xx"}}[{RI}]))'
          f" / sum by (model) (rate(servegate_requests_total{{{MODEL}}}[{RI}]))",
          "{{model}} 5xx ratio"),
        q(f"sum by (model, code) (rate(servegate_rejected_requests_total{{{MODEL}}}[{RI}]))"
          f" / ignoring(code) group_left sum by (model) "
          f"(rate(servegate_requests_total{{{MODEL}}}[{RI}]))",
          "{{model}} rejected by the gateway ({{code}})"),
    ], unit="percentunit",
        description="5xx answers over all answers; requests the gateway refused itself "
                    "(no endpoint, queue full, timeout while held) by status code."),
    timeseries("Latency p50 / p99", [
        q(quantile(0.5, "model"), "{{model}} p50"),
        q(quantile(0.99, "model"), "{{model}} p99"),
    ], unit="s", description="Gateway-observed latency, from request to full response."),
    timeseries("In flight", [
        q(f"sum by (model) (servegate_in_flight_requests{{{MODEL}}})", "{{model}}"),
    ], description="Requests in flight through the gateway (all replicas)."),
    row("Scaling (per pool)"),
    timeseries("Queue depth (held for a cold start)", [
        q(f"sum by (pool) (servegate_queued_requests{{{POOL}}})", "{{pool}}"),
    ], description="Requests the gateway holds while their pool has no ready endpoint."),
    timeseries("Cold starts", [
        q(f"sum by (pool) (increase(servegate_pool_activations_total{{{POOL}}}[5m]))",
          "{{pool}} gateway activations"),
        q(f"max by (pool) (increase(servegate_autoscaler_activations_total{{{POOL}}}[5m]))",
          "{{pool}} seen by the autoscaler"),
    ], description="Activations per 5 minutes: a request found no ready endpoint and the "
                   "pool was asked to scale from zero."),
    timeseries("Cold start time (p99)", [
        q(f"histogram_quantile(0.99, sum by (pool, le) "
          f"(rate(servegate_cold_start_seconds_bucket{{{POOL}}}[{RI}])))",
          "{{pool}} first held request to ready endpoint"),
        q(f"histogram_quantile(0.99, sum by (pool, le) "
          f"(rate(servegate_cold_start_wait_seconds_bucket{{{POOL}}}[{RI}])))",
          "{{pool}} time a request was held"),
    ], unit="s"),
    timeseries("Replicas: desired vs actual", [
        q(f"max by (pool) (servegate_autoscaler_desired_replicas{{{POOL}}})",
          "{{pool}} desired"),
        q(f"max by (pool) (servegate_autoscaler_current_replicas{{{POOL}}})",
          "{{pool}} current"),
        q(f"max by (pool) (servegate_autoscaler_ready_replicas{{{POOL}}})",
          "{{pool}} ready"),
        q(f"count by (pool) (max by (pool, endpoint) "
          f"(servegate_endpoint_healthy{{{POOL}}}) == 1)", "{{pool}} endpoints admitted"),
    ], description="The autoscaler's decision, the pool's size and ready replicas (from the "
                   "autoscaler), and the endpoints the gateway admits.",
        lineInterpolation="stepAfter"),
    table("Last decision: why", [
        q(f"max by (pool, dominant, clipped_by, valid) "
          f"(servegate_autoscaler_decision_info{{{POOL}}})", ""),
    ], description="dominant: the signal that set the count; clipped_by: the limits that "
                   "changed it (rate limits, min/max, schedules); valid: false when signals "
                   "were missing and the count was held."),
    timeseries("GPU utilization", [
        q(f"100 * avg by (service) (nv_gpu_utilization{{{NS}}})", "Triton {{service}}"),
        q(f"avg by (pod) (DCGM_FI_DEV_GPU_UTIL{{{NS}}})", "DCGM {{pod}}"),
    ], unit="percent", description="Triton's nv_gpu_utilization (0-1, shown x100) and the "
                                   "DCGM exporter's DCGM_FI_DEV_GPU_UTIL (%)."),
    row("Traffic management"),
    timeseries("Split weights", [
        q(f"max by (model, variant) (servegate_split_weight{{{MODEL}}})",
          "{{model}} / {{variant}}"),
    ], description="Current weight of each split variant (rollouts move these).",
        lineInterpolation="stepAfter"),
    timeseries("Requests per variant", [
        q(f"sum by (model, variant) (rate(servegate_variant_requests_total{{{MODEL}}}[{RI}]))",
          "{{model}} / {{variant}}"),
    ], unit="reqps"),
    timeseries("Shadow agreement", [
        q(f'sum by (model, variant) (rate(servegate_shadow_comparisons_total{{{MODEL}, '
          f'agree="true"}}[{RI}])) / sum by (model, variant) '
          f"(rate(servegate_shadow_comparisons_total{{{MODEL}}}[{RI}]))",
          "{{model}} / {{variant}}"),
    ], unit="percentunit", description="Share of shadow answers that agreed with the primary."),
    row("Cost (per pool, model and tenant)"),
    timeseries("Cost per hour", [
        q(f"3600 * sum by (model, tenant) (rate(servegate_cost_dollars_total{{{POOL}, "
          f'model=~"$model|_idle"}}[{RI}]))', "{{model}} / {{tenant}}"),
    ], unit="currencyUSD", description="Dollars per hour charged to each model and tenant: "
                                       "backend busy time plus a share of the pool's idle time "
                                       "by demand, at the pool's price per GPU-hour (spot or "
                                       "on-demand). _idle / _idle: idle capacity nobody used.",
        stacking={"mode": "normal"}),
    timeseries("GPU-seconds per 1,000 inferences", [
        q(f"1000 * sum by (model, tenant) (rate(servegate_cost_gpu_seconds_total{{{MODEL}, "
          f"{POOL.removeprefix(NS + ', ')}}}[{RI}])) / sum by (model, tenant) "
          f"(rate(servegate_cost_requests_total{{{MODEL}, {POOL.removeprefix(NS + ', ')}}}"
          f"[{RI}]))", "{{model}} / {{tenant}}"),
    ], unit="s", description="What 1,000 answered inferences cost in GPU time (idle share "
                             "included); multiply by the price per GPU-hour / 3600 for money."),
    timeseries("Idle share of provisioned GPU time", [
        q(f"sum by (pool) (rate(servegate_cost_idle_gpu_seconds_total{{{POOL}}}[{RI}])) / "
          f"sum by (pool) (rate(servegate_pool_gpu_seconds_total{{{POOL}}}[{RI}]))",
          "{{pool}}"),
    ], unit="percentunit", description="Idle over provisioned GPU-seconds per pool (ready "
                                       "replicas x GPUs per replica; MIG and time-sliced "
                                       "replicas count as their fraction)."),
]


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows span the width; other panels go three to a row, 8 columns by 8 units each."""
    out, x, y = [], 0, 0
    for n, panel in enumerate(panels, start=1):
        p = dict(panel, id=n)
        if p["type"] == "row":
            if x:
                x, y = 0, y + 8
            p["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
        else:
            p["gridPos"] = {"h": 8, "w": 8, "x": x, "y": y}
            x += 8
            if x >= 24:
                x, y = 0, y + 8
        out.append(p)
    return out


def var(name: str, query: str, label: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}


def dashboard() -> dict[str, Any]:
    return {
        "title": "servegate",
        "uid": "servegate",
        "description": "servegate gateway and autoscaler: traffic, latency, cold starts, "
                       "replicas, GPU utilization, splits, shadow agreement and cost",
        "tags": ["servegate", "triton", "inference"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            var("namespace", "label_values(servegate_requests_total, namespace)", "Namespace"),
            var("model", f'label_values(servegate_requests_total{{{NS}}}, model)', "Model"),
            var("pool", f'label_values(servegate_queued_requests{{{NS}}}, pool)', "Pool"),
        ]},
        "annotations": {"list": []},
        "panels": layout(PANELS),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if a written file is stale")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        stale = [str(o) for o in OUTPUTS if not o.exists() or o.read_text() != text]
        for o in stale:
            print(f"stale: {o} (run deploy/grafana/build_dashboard.py)", file=sys.stderr)
        return 1 if stale else 0
    for o in OUTPUTS:
        o.parent.mkdir(parents=True, exist_ok=True)
        o.write_text(text)
        print(f"wrote {o}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
