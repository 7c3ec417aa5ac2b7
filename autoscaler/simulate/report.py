"""Score the simulated runs: a table per trace, a JSON report, and PNG plots per trace.

Where it sits: the last step of ``servegate simulate``. The scores, per policy and trace:

- ``slo_violation_s``: seconds whose arrivals' p99 latency exceeds the SLO (a timed-out
  request counts as slower than any);
- ``requests_over_slo_pct``: the share of all requests over the SLO (timed out included);
- ``timed_out``: requests dropped after waiting ``timeout_s``;
- ``replica_s``: replica-seconds, starting replicas included (the cost);
- ``scale_events``: changes of the replica count; ``max_replicas``: the most at once.

The JSON layout is a public contract:
``{"traces": {TRACE: {POLICY: {"slo_violation_s", "timed_out", "replica_s", "scale_events",
"max_replicas", "requests_over_slo_pct"}}}}`` for POLICY in servegate, hpa, keda, kpa (the
upstream defaults) and oracle (the true oracle); with ``--fronts`` also
``"fronts": {TRACE: {FAMILY: [{"params", "slo_violation_s", "replica_s",
"requests_over_slo_pct"}, ...]}}``. matplotlib is imported only when plots are asked for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoscaler.errors import PlotError
from autoscaler.simulate.fronts import Point, dominates
from autoscaler.simulate.model import RunResult
from autoscaler.simulate.runner import POLICIES, TraceRun

FIELDS = ("slo_violation_s", "timed_out", "replica_s", "scale_events", "max_replicas",
          "requests_over_slo_pct")
OVER_ORACLE_MAX = 1.25
WITHIN_SLO_MIN_PCT = 99.5
ORACLE_ALL_WITHIN_PCT = 0.05  # the latency tail is continuous: 99.95% within counts as all
COLORS = {"servegate": "tab:green", "hpa": "tab:blue", "keda": "tab:purple",
          "kpa": "tab:orange", "oracle": "0.3", "hpa+queue": "tab:cyan",
          "kpa-rps": "tab:red", "kpa-concurrency": "tab:orange"}
Score = dict[str, Any]


def scores(result: RunResult) -> Score:
    return {
        "slo_violation_s": int(result.violation.sum()),
        "timed_out": round(result.timed_out),
        "replica_s": round(result.replica_s),
        "scale_events": result.scale_events,
        "max_replicas": result.max_replicas,
        "requests_over_slo_pct": round(result.requests_over_slo_pct, 4),
    }


def report(runs: Sequence[TraceRun],
           fronts: Mapping[str, Mapping[str, Sequence[Point]]] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"traces": {run.trace.name: {p: scores(run.results[p])
                                                       for p in POLICIES} for run in runs}}
    if fronts is not None:
        doc["fronts"] = {t: {fam: [p.doc() for p in pts] for fam, pts in by_fam.items()}
                         for t, by_fam in fronts.items()}
    return doc


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def dominated_by(sg: Score, front: Mapping[str, Sequence[Point]]) -> list[Point]:
    """The front points that Pareto-dominate servegate (no worse on both, better on one)."""
    return [p for pts in front.values() for p in pts
            if dominates(p, sg["slo_violation_s"], sg["replica_s"])]


def verdicts(trace: dict[str, Score],
             front: Mapping[str, Sequence[Point]] | None = None) -> list[tuple[str, bool]]:
    """The benchmark's targets for one trace, each with whether servegate meets it."""
    sg, hpa, keda, oracle = (trace[p] for p in ("servegate", "hpa", "keda", "oracle"))
    viol, cost = sg["slo_violation_s"], sg["replica_s"]
    ratio = cost / oracle["replica_s"] if oracle["replica_s"] else float("inf")
    within = 100.0 - sg["requests_over_slo_pct"]
    out = [
        (f"SLO-violation s <= hpa and keda ({viol} <= {hpa['slo_violation_s']}, "
         f"{keda['slo_violation_s']})",
         viol <= hpa["slo_violation_s"] and viol <= keda["slo_violation_s"]),
        (f"replica-s < hpa and keda ({cost} < {hpa['replica_s']}, {keda['replica_s']})",
         cost < hpa["replica_s"] and cost < keda["replica_s"]),
        (f"replica-s <= {OVER_ORACLE_MAX}x oracle ({ratio:.2f}x)", ratio <= OVER_ORACLE_MAX),
    ]
    if oracle["requests_over_slo_pct"] < ORACLE_ALL_WITHIN_PCT:  # the oracle: ~100% within
        out.append((f"requests within SLO >= {WITHIN_SLO_MIN_PCT}% ({within:.2f}%)",
                    within >= WITHIN_SLO_MIN_PCT))
    if front is not None:
        beaten = dominated_by(sg, front)
        text = ", ".join(f"{p.family} {p.slo_violation_s}/{p.replica_s}" for p in beaten[:3])
        out.append((f"not Pareto-dominated by any front point ({len(beaten)} dominate"
                    + (f": {text}" if beaten else "") + ")", not beaten))
    return out


def table(name: str, trace: dict[str, Score], seconds: int,
          front: Mapping[str, Sequence[Point]] | None = None) -> str:
    head = (f"{'policy':<10} {'SLO-viol s':>10} {'% req >SLO':>10} {'timed out':>10} "
            f"{'replica-s':>10} {'x oracle':>8} {'scale ev':>8} {'max rep':>7}")
    oracle_cost = trace["oracle"]["replica_s"] or 1
    rows = [f"== trace {name} ({seconds} s) ==", head, "-" * len(head)]
    for p in POLICIES:
        s = trace[p]
        rows.append(f"{p:<10} {s['slo_violation_s']:>10} {s['requests_over_slo_pct']:>10.3f} "
                    f"{s['timed_out']:>10} {s['replica_s']:>10} "
                    f"{s['replica_s'] / oracle_cost:>8.2f} {s['scale_events']:>8} "
                    f"{s['max_replicas']:>7}")
    if front is not None:
        for fam, pts in front.items():
            rows.append(f"  front {fam}: " + ", ".join(
                f"{p.slo_violation_s}/{p.replica_s}" for p in pts) + "  (viol s/replica-s)")
    rows += [f"  [{'met ' if ok else 'MISS'}] {text}" for text, ok in verdicts(trace, front)]
    beaten = oracle_beaten_by(trace, front)
    rows.append(f"  [{'ok  ' if not beaten else 'BUG '}] the oracle is a bound: no policy "
                "or front point has as few violation-s at less cost"
                + (f" ({', '.join(beaten)})" if beaten else ""))
    return "\n".join(rows)


def oracle_beaten_by(trace: dict[str, Score],
                     front: Mapping[str, Sequence[Point]] | None = None) -> list[str]:
    """Who has no more violation-seconds than the oracle and fewer replica-seconds."""
    o = trace["oracle"]
    named = [(p, s["slo_violation_s"], s["replica_s"]) for p, s in trace.items()
             if p != "oracle"]
    named += [(p.family, p.slo_violation_s, p.replica_s)
              for pts in (front or {}).values() for p in pts]
    return [name for name, v, c in named
            if v <= o["slo_violation_s"] and c < o["replica_s"]]


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
    ax_load.plot(t, res["servegate"].arrivals[:n], color="black", lw=0.7)
    ax_load.set_ylabel("arrivals (req/s)")
    ax_load.set_title(f"trace {run.trace.name}: load, replicas and p99 per policy")
    for p in reversed(POLICIES):  # servegate drawn last, on top
        s = scores(res[p])
        label = f"{p}: {s['slo_violation_s']} SLO-viol s, {s['replica_s']} replica-s"
        ours = p == "servegate"
        ax_rep.step(t, res[p].replicas[:n], where="post", color=COLORS[p], lw=1.8 if ours else 1.0,
                    alpha=1.0 if ours else 0.8, label=label)
        if len(res[p].p99):
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


def plot_front(name: str, trace: dict[str, Score], points: Sequence[Point],
               front: Mapping[str, Sequence[Point]], out_dir: Path) -> Path:
    """One PNG: every grid point, each family's front, the named defaults and the oracle."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 6))
    for fam, pts in front.items():
        color = COLORS.get(fam, "0.5")
        grid = [p for p in points if p.family == fam]
        ax.scatter([p.replica_s for p in grid], [p.slo_violation_s for p in grid], s=10,
                   color=color, alpha=0.3)
        ax.plot([p.replica_s for p in pts], [p.slo_violation_s for p in pts], "o-",
                color=color, ms=4, lw=1, label=f"{fam} front")
    for p, marker in (("hpa", "s"), ("keda", "D"), ("kpa", "^"), ("oracle", "P"),
                      ("servegate", "*")):
        s = trace[p]
        ax.scatter([s["replica_s"]], [s["slo_violation_s"]], marker=marker,
                   s=220 if p == "servegate" else 90, color=COLORS[p], edgecolor="black",
                   zorder=5, label=f"{p}{'' if p in ('servegate', 'oracle') else ' default'}")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=-0.5)
    ax.set_xlabel("replica-seconds (cost)")
    ax.set_ylabel("SLO-violation seconds")
    ax.set_title(f"trace {name}: Pareto fronts (lower left is better)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = out_dir / f"{name}-fronts.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
