"""Score the simulated runs: a table per trace, a JSON report, and a PNG per trace.

Where it sits: the last step of ``servegate simulate``. The scores, per policy and trace:

- ``slo_violation_s``: seconds whose arrivals' p99 latency exceeds the SLO (a timed-out
  request counts as slower than any);
- ``timed_out``: requests dropped after waiting ``timeout_s``;
- ``replica_s``: replica-seconds, starting replicas included (the cost);
- ``scale_events``: changes of the replica count; ``max_replicas``: the most at once.

The JSON layout is a public contract:
``{"traces": {TRACE: {POLICY: {"slo_violation_s", "timed_out", "replica_s", "scale_events",
"max_replicas"}}}}``. matplotlib is imported only when plots are asked for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoscaler.errors import PlotError
from autoscaler.simulate.model import RunResult
from autoscaler.simulate.runner import POLICIES, TraceRun

FIELDS = ("slo_violation_s", "timed_out", "replica_s", "scale_events", "max_replicas")
OVER_ORACLE_MAX = 1.3
COLORS = {"servegate": "tab:green", "hpa": "tab:blue", "kpa": "tab:orange", "oracle": "0.4"}


def scores(result: RunResult) -> dict[str, int]:
    return {
        "slo_violation_s": int(result.violation.sum()),
        "timed_out": round(result.timed_out),
        "replica_s": round(result.replica_s),
        "scale_events": result.scale_events,
        "max_replicas": result.max_replicas,
    }


def report(runs: Sequence[TraceRun]) -> dict[str, Any]:
    return {"traces": {run.trace.name: {p: scores(run.results[p]) for p in POLICIES}
                       for run in runs}}


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def verdicts(trace: dict[str, dict[str, int]]) -> list[tuple[str, bool]]:
    """The benchmark's targets for one trace, each with whether servegate meets it."""
    sg, hpa, kpa, oracle = (trace[p] for p in POLICIES)
    viol, cost = sg["slo_violation_s"], sg["replica_s"]
    ratio = cost / oracle["replica_s"] if oracle["replica_s"] else float("inf")
    return [
        (f"fewer SLO-violation s than hpa ({viol} < {hpa['slo_violation_s']})",
         viol < hpa["slo_violation_s"]),
        (f"fewer SLO-violation s than kpa ({viol} < {kpa['slo_violation_s']})",
         viol < kpa["slo_violation_s"]),
        (f"replica-s <= hpa ({cost} <= {hpa['replica_s']})", cost <= hpa["replica_s"]),
        (f"replica-s <= kpa ({cost} <= {kpa['replica_s']})", cost <= kpa["replica_s"]),
        (f"replica-s <= {OVER_ORACLE_MAX}x oracle ({ratio:.2f}x)", ratio <= OVER_ORACLE_MAX),
    ]


def table(name: str, trace: dict[str, dict[str, int]], seconds: int) -> str:
    head = (f"{'policy':<10} {'SLO-viol s':>10} {'timed out':>10} {'replica-s':>10} "
            f"{'x oracle':>8} {'scale ev':>8} {'max rep':>7}")
    oracle_cost = trace["oracle"]["replica_s"] or 1
    rows = [f"== trace {name} ({seconds} s) ==", head, "-" * len(head)]
    for p in POLICIES:
        s = trace[p]
        rows.append(f"{p:<10} {s['slo_violation_s']:>10} {s['timed_out']:>10} "
                    f"{s['replica_s']:>10} {s['replica_s'] / oracle_cost:>8.2f} "
                    f"{s['scale_events']:>8} {s['max_replicas']:>7}")
    rows += [f"  [{'met ' if ok else 'MISS'}] {text}" for text, ok in verdicts(trace)]
    return "\n".join(rows)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotError("--plots needs matplotlib: pip install 'servegate[sim]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(run: TraceRun, out_dir: Path) -> Path:
    """One PNG: load, replicas per policy, and p99 per policy against the SLO."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    res = run.results
    n = run.trace.seconds
    t = np.arange(n)
    fig, (ax_load, ax_rep, ax_p99) = plt.subplots(3, 1, figsize=(12, 9), sharex=True)
    ax_load.plot(t, res["oracle"].arrivals[:n], color="black", lw=0.7)
    ax_load.set_ylabel("arrivals (req/s)")
    ax_load.set_title(f"trace {run.trace.name}: load, replicas and p99 per policy")
    for p in reversed(POLICIES):  # servegate drawn last, on top
        s = scores(res[p])
        label = f"{p}: {s['slo_violation_s']} SLO-viol s, {s['replica_s']} replica-s"
        ours = p == "servegate"
        ax_rep.step(t, res[p].replicas[:n], where="post", color=COLORS[p], lw=1.8 if ours else 1.0,
                    alpha=1.0 if ours else 0.8, label=label)
        ax_p99.plot(t, res[p].p99[:n], color=COLORS[p], lw=1.2 if ours else 0.7,
                    alpha=1.0 if ours else 0.6, label=p)
    ax_rep.set_ylabel("replicas (incl. starting)")
    handles, labels = ax_rep.get_legend_handles_labels()
    ax_rep.legend(handles[::-1], labels[::-1], loc="upper right", fontsize=8)
    ax_p99.axhline(run.profile.slo_p99_s, color="red", ls="--", lw=1,
                   label=f"SLO {run.profile.slo_p99_s:g}s")
    ax_p99.set_yscale("log")
    ax_p99.set_ylabel("p99 latency (s), by arrival\n(timed out = timeout)")
    ax_p99.set_xlabel("time (s)")
    handles, labels = ax_p99.get_legend_handles_labels()
    ax_p99.legend(handles[::-1], labels[::-1], loc="upper right", fontsize=8, ncol=5)
    fig.tight_layout()
    path = out_dir / f"{run.trace.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
