"""The autoscaler's ``servegate`` subcommands: ``simulate``.

Where it sits: ``gateway/cli.py`` (the ``servegate`` entry point) calls
:func:`add_subcommands` while building its parser and hands a parsed ``simulate`` to
:func:`run`. Arguments become settings once, here; nothing reads the environment.

``servegate simulate [--trace NAME ...] [--trace-csv FILE] [--json OUT] [--plots DIR]``
runs servegate's policy, an HPA-like, a KPA-like policy and an oracle on each trace and prints
a table per trace. Without ``--trace`` or ``--trace-csv`` it runs every built-in trace. The
pool and SLO flags describe the pool a CSV trace is served by; built-in traces always use the
default pool (so their results stay comparable between runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoscaler.errors import SimulationError
from autoscaler.simulate.profile import BUILTIN_TRACES, PoolProfile

if TYPE_CHECKING:
    from autoscaler.simulate.model import Trace

_DEFAULT = PoolProfile()


def add_subcommands(sub: Any) -> None:
    """Add ``simulate`` to the ``servegate`` parser's subparsers."""
    sim = sub.add_parser(
        "simulate", help="compare servegate's autoscaling policy with HPA, KPA and an oracle",
        description="Simulate a Triton pool under each trace with servegate's policy, an "
                    "HPA-like and a Knative-KPA-like policy (upstream defaults) and an oracle; "
                    "print a table per trace.")
    sim.add_argument("--trace", nargs="+", action="extend", choices=BUILTIN_TRACES,
                     metavar="NAME", help=f"built-in trace(s): {', '.join(BUILTIN_TRACES)}")
    sim.add_argument("--trace-csv", action="append", type=Path, default=[], metavar="FILE",
                     help="a CSV of arrival timestamps in seconds, one per line")
    sim.add_argument("--json", type=Path, metavar="OUT", help="write the JSON report here")
    sim.add_argument("--plots", type=Path, metavar="DIR", help="write a PNG per trace here")
    pool = sim.add_argument_group("pool and SLO for --trace-csv")
    pool.add_argument("--slo-ms", type=float, default=_DEFAULT.slo_p99_s * 1000,
                      help="p99 latency SLO (default %(default)g)")
    pool.add_argument("--startup-s", type=float, default=_DEFAULT.startup_s,
                      help="replica cold start (default %(default)g)")
    pool.add_argument("--timeout-s", type=float, default=_DEFAULT.timeout_s,
                      help="request timeout while queued (default %(default)g)")
    pool.add_argument("--batch-fixed-ms", type=float, default=_DEFAULT.batch_fixed_s * 1000,
                      help="service time of a batch: fixed part (default %(default)g)")
    pool.add_argument("--batch-item-ms", type=float, default=_DEFAULT.batch_item_s * 1000,
                      help="service time of a batch: per request (default %(default)g)")
    pool.add_argument("--max-batch", type=int, default=_DEFAULT.max_batch,
                      help="Triton max batch size (default %(default)d)")
    pool.add_argument("--instances", type=int, default=_DEFAULT.instances,
                      help="model instances (concurrent batches) per replica "
                           "(default %(default)d)")
    pool.add_argument("--max-replicas", type=int, default=_DEFAULT.max_replicas,
                      help="most replicas any policy may run (default %(default)d)")


def csv_profile(args: argparse.Namespace) -> PoolProfile:
    for flag in ("slo_ms", "timeout_s", "max_batch", "instances", "max_replicas"):
        if getattr(args, flag) <= 0:
            raise SimulationError(f"--{flag.replace('_', '-')} must be > 0")
    if args.startup_s < 0 or args.batch_fixed_ms < 0 or args.batch_item_ms < 0:
        raise SimulationError("--startup-s, --batch-fixed-ms and --batch-item-ms must be >= 0")
    if args.batch_fixed_ms + args.batch_item_ms <= 0:
        raise SimulationError("a batch must take some time: --batch-fixed-ms/--batch-item-ms")
    return PoolProfile(
        batch_fixed_s=args.batch_fixed_ms / 1000, batch_item_s=args.batch_item_ms / 1000,
        max_batch=args.max_batch, instances=args.instances, startup_s=args.startup_s,
        timeout_s=args.timeout_s, slo_p99_s=args.slo_ms / 1000,
        max_replicas=args.max_replicas)


def jobs(args: argparse.Namespace) -> list[tuple[Trace, PoolProfile]]:
    from autoscaler.simulate import traces

    names: list[str] = args.trace or ([] if args.trace_csv else list(traces.BUILTIN))
    out = [(traces.builtin(n), _DEFAULT) for n in dict.fromkeys(names)]
    if args.trace_csv:
        profile = csv_profile(args)
        out += [(traces.from_csv(path), profile) for path in args.trace_csv]
    seen = [t.name for t, _ in out]
    if len(set(seen)) != len(seen):
        raise SimulationError(f"two traces with the same name: {seen}")
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``simulate``; returns the process exit code."""
    from autoscaler.simulate import report
    from autoscaler.simulate.runner import run_all

    try:
        if args.plots is not None:
            report._pyplot()  # fail before simulating, not after
        started = time.monotonic()
        runs = run_all(jobs(args))
        doc = report.report(runs)
        for r in runs:
            print(report.table(r.trace.name, doc["traces"][r.trace.name], r.trace.seconds))
            print()
        if args.json is not None:
            report.write_json(doc, args.json)
            print(f"JSON report: {args.json}")
        if args.plots is not None:
            for r in runs:
                print(f"plot: {report.plot(r, args.plots)}")
        print(f"simulated {len(runs)} trace(s) x 4 policies in "
              f"{time.monotonic() - started:.1f}s")
    except SimulationError as exc:
        print(f"servegate simulate: {exc}", file=sys.stderr)
        return 2
    return 0
