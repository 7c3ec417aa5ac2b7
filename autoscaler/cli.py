"""The autoscaler's ``servegate`` subcommands: ``autoscaler`` and ``simulate``.

Where it sits: ``servegate/cli.py`` (the ``servegate`` entry point) calls
:func:`add_subcommands` while building its parser and hands a parsed ``autoscaler`` or
``simulate`` to :func:`run`. Arguments become settings once, here; nothing reads the
environment (only the Kubernetes connection looks for in-cluster variables, at start).

``servegate autoscaler --config FILE [--actuator local|kubernetes|keda|hpa|none]
[--status-port 9096] [--keda-port 9095] [--gateway URL ...] [--redis-url URL] ...`` runs the
control loop (see :mod:`autoscaler.main`); ``--help`` lists the Kubernetes and lease flags.

``servegate simulate [--trace NAME ...] [--trace-csv FILE] [--scale K] [--fronts] [--seeds N]
[--startup-sweep] [--json OUT] [--plots DIR]`` runs servegate's policy, HPA, KEDA + HPA and
Knative KPA at their defaults and the true oracle on each trace and prints a table per trace;
``--fronts`` adds each baseline family's parameter grid and Pareto front, ``--seeds N`` N
paired realizations per trace, ``--startup-sweep`` the named policies at 5, 20, 60 and 120 s
start-up. Without ``--trace`` or ``--trace-csv`` it runs every built-in trace. The pool and
SLO flags apply to every trace, built-in or CSV.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoscaler.errors import SimulationError
from autoscaler.simulate.profile import BUILTIN_TRACES, PoolProfile

if TYPE_CHECKING:
    from autoscaler.simulate.model import Trace

_DEFAULT = PoolProfile()


def add_subcommands(sub: Any) -> None:
    """Add ``autoscaler`` and ``simulate`` to the ``servegate`` parser's subparsers."""
    _add_autoscaler(sub)
    sim = sub.add_parser(
        "simulate", help="compare servegate's autoscaling policy with HPA, KPA and an oracle",
        description="Simulate a Triton pool under each trace with servegate's policy, an "
                    "HPA-like and a Knative-KPA-like policy (upstream defaults) and an oracle; "
                    "print a table per trace.")
    sim.add_argument("--trace", nargs="+", action="extend", choices=BUILTIN_TRACES,
                     metavar="NAME", help=f"built-in trace(s): {', '.join(BUILTIN_TRACES)}")
    sim.add_argument("--trace-csv", action="append", type=Path, default=[], metavar="FILE",
                     help="a CSV of arrival timestamps (seconds or ISO date-times), one per "
                          "line")
    sim.add_argument("--scale", type=int, default=1, metavar="K",
                     help="superpose K copies of each CSV trace, jittered +-0.5 s "
                          "(default %(default)d)")
    sim.add_argument("--fronts", action="store_true",
                     help="sweep each baseline family's parameters: Pareto fronts")
    sim.add_argument("--seeds", type=int, default=0, metavar="N",
                     help="also N paired seeds per trace: mean, 95%% CI, win rates")
    sim.add_argument("--startup-sweep", action="store_true",
                     help="also the named policies at 5, 20, 60 and 120 s start-up")
    sim.add_argument("--workers", type=int, default=None, metavar="N",
                     help="worker processes (default: the cores)")
    sim.add_argument("--json", type=Path, metavar="OUT", help="write the JSON report here")
    sim.add_argument("--plots", type=Path, metavar="DIR", help="write PNGs per trace here")
    pool = sim.add_argument_group("pool and SLO (every trace)")
    pool.add_argument("--slo-ms", type=float, default=_DEFAULT.slo_p99_s * 1000,
                      help="p99 latency SLO (default %(default)g)")
    pool.add_argument("--startup-s", type=float, default=_DEFAULT.startup_s,
                      help="replica cold start (default %(default)g)")
    pool.add_argument("--startup-cv", type=float, default=_DEFAULT.startup_cv,
                      help="spread of the start-up (lognormal cv, default %(default)g)")
    pool.add_argument("--service-cv", type=float, default=_DEFAULT.service_cv,
                      help="spread of service times (cv, default %(default)g)")
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


def _add_autoscaler(sub: Any) -> None:
    a = sub.add_parser(
        "autoscaler", help="run the autoscaler: gateway signals -> policy -> actuator",
        description="Collect the gateways' signals, decide each pool's replicas and apply "
                    "them through the chosen actuator; serve /status, /metrics, "
                    "POST /activate (and /pools/<pool>/endpoints for the local actuator).")
    a.add_argument("--config", required=True, type=Path, help="servegate YAML config")
    a.add_argument("--actuator", default="none",
                   choices=("local", "kubernetes", "keda", "hpa", "none"),
                   help="what applies the decisions (default: none, a dry run that only "
                        "publishes them)")
    a.add_argument("--host", default="0.0.0.0", help="address of the status and KEDA servers")
    a.add_argument("--status-port", type=int, default=9096,
                   help="/status, /metrics, /activate (default %(default)d)")
    a.add_argument("--keda-port", type=int, default=9095,
                   help="KEDA external scaler gRPC port, --actuator keda (default %(default)d)")
    a.add_argument("--serve-keda", action="store_true",
                   help="with another --actuator, also serve KEDA's external scaler on "
                        "--keda-port, reporting the same decisions (the demo does)")
    a.add_argument("--gateway", action="append", default=[], metavar="URL",
                   help="a gateway replica to scrape (adds to autoscaling.signals.gateways)")
    a.add_argument("--redis-url", default=None,
                   help="subscribe to activations on servegate:activate "
                        "(default: autoscaling.signals.redis_url)")
    k = a.add_argument_group("kubernetes (--actuator kubernetes)")
    k.add_argument("--kube-api-url", default=None,
                   help="API server URL without auth (tests, kubectl proxy); default: "
                        "in-cluster config, else the kubeconfig")
    k.add_argument("--kubeconfig", default=None)
    k.add_argument("--kube-context", default=None)
    k.add_argument("--namespace", default=None,
                   help="default namespace of the Deployments (default: the pod's, else "
                        "'default')")
    k.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                   help="only the holder of a coordination.k8s.io Lease acts "
                        "(default: on)")
    k.add_argument("--lease-name", default="servegate-autoscaler")
    k.add_argument("--lease-namespace", default=None, help="default: --namespace")
    k.add_argument("--lease-duration-s", type=int, default=15)
    k.add_argument("--identity", default="", help="this replica's name in the Lease "
                                                  "(default: hostname-pid)")


def _run_autoscaler(args: argparse.Namespace) -> int:
    from autoscaler.main import AutoscalerSettings, KubeSettings
    from autoscaler.main import run as run_loop

    if args.lease_duration_s < 1:
        print("servegate autoscaler: --lease-duration-s must be >= 1", file=sys.stderr)
        return 2
    kube = KubeSettings(
        api_url=args.kube_api_url, kubeconfig=args.kubeconfig, context=args.kube_context,
        namespace=args.namespace, leader_elect=args.leader_elect, lease_name=args.lease_name,
        lease_namespace=args.lease_namespace, lease_duration_s=args.lease_duration_s,
        lease_renew_s=max(args.lease_duration_s / 5, 0.2), identity=args.identity)
    return run_loop(AutoscalerSettings(
        config_path=args.config, actuator=args.actuator, host=args.host,
        status_port=args.status_port, keda_port=args.keda_port, serve_keda=args.serve_keda,
        gateways=tuple(args.gateway),
        redis_url=args.redis_url, kube=kube))


def csv_profile(args: argparse.Namespace) -> PoolProfile:
    for flag in ("slo_ms", "timeout_s", "max_batch", "instances", "max_replicas"):
        if getattr(args, flag) <= 0:
            raise SimulationError(f"--{flag.replace('_', '-')} must be > 0")
    if min(args.startup_s, args.batch_fixed_ms, args.batch_item_ms, args.startup_cv,
           args.service_cv) < 0:
        raise SimulationError("--startup-s, --startup-cv, --service-cv, --batch-fixed-ms and "
                              "--batch-item-ms must be >= 0")
    if args.batch_fixed_ms + args.batch_item_ms <= 0:
        raise SimulationError("a batch must take some time: --batch-fixed-ms/--batch-item-ms")
    return PoolProfile(
        batch_fixed_s=args.batch_fixed_ms / 1000, batch_item_s=args.batch_item_ms / 1000,
        max_batch=args.max_batch, instances=args.instances, startup_s=args.startup_s,
        timeout_s=args.timeout_s, slo_p99_s=args.slo_ms / 1000,
        max_replicas=args.max_replicas, startup_cv=args.startup_cv,
        service_cv=args.service_cv)


def jobs(args: argparse.Namespace, seed: int = 0) -> list[tuple[Trace, PoolProfile]]:
    from autoscaler.simulate import traces

    if args.scale < 1:
        raise SimulationError("--scale must be >= 1")
    profile = csv_profile(args)
    names: list[str] = args.trace or ([] if args.trace_csv else list(traces.BUILTIN))
    out = [(traces.builtin(n, seed), profile) for n in dict.fromkeys(names)]
    out += [(traces.from_csv(path, scale=args.scale, seed=seed), profile)
            for path in args.trace_csv]
    seen = [t.name for t, _ in out]
    if len(set(seen)) != len(seen):
        raise SimulationError(f"two traces with the same name: {seen}")
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``autoscaler`` or ``simulate``; returns the process exit code."""
    if args.command == "autoscaler":
        return _run_autoscaler(args)
    from autoscaler.simulate import report

    try:
        if args.plots is not None:
            report._pyplot()  # fail before simulating, not after
        if args.seeds < 0:
            raise SimulationError("--seeds must be >= 0")
        started = time.monotonic()
        _simulate(args, jobs(args))
        print(f"simulated in {time.monotonic() - started:.1f}s")
    except SimulationError as exc:
        print(f"servegate simulate: {exc}", file=sys.stderr)
        return 2
    return 0


def _simulate(args: argparse.Namespace, todo: list[tuple[Trace, PoolProfile]]) -> None:
    from autoscaler.simulate import fronts as fr
    from autoscaler.simulate import report
    from autoscaler.simulate.runner import run_all, run_jobs

    runs = run_all(todo, args.workers)
    front_docs = None
    by_trace: dict[str, list[fr.Point]] = {}
    if args.fronts:
        fjobs = [j for t, p in todo for j in fr.family_jobs(t, p)]
        for job, res in zip(fjobs, run_jobs(fjobs, args.workers), strict=True):
            by_trace.setdefault(job.trace.name, []).append(fr.point(job, res))
        front_docs = {name: fr.fronts(pts) for name, pts in by_trace.items()}
    doc = report.report(runs, front_docs)
    for r in runs:
        name = r.trace.name
        front = front_docs[name] if front_docs is not None else None
        print(report.table(name, doc["traces"][name], r.trace.seconds, front))
        print()
    if args.seeds:
        _paired(args)
    if args.startup_sweep:
        _startup_sweep(args, todo)
    if args.json is not None:
        report.write_json(doc, args.json)
        print(f"JSON report: {args.json}")
    if args.plots is not None:
        for r in runs:
            print(f"plot: {report.plot(r, args.plots)}")
            if front_docs is not None:
                name = r.trace.name
                print("plot: " + str(report.plot_front(name, doc["traces"][name],
                                                        by_trace[name], front_docs[name],
                                                        args.plots)))


def _paired(args: argparse.Namespace) -> None:
    from autoscaler.simulate import paired
    from autoscaler.simulate.runner import POLICIES, named_jobs, run_jobs

    per_seed = [jobs(args, seed) for seed in range(1, args.seeds + 1)]
    flat = [j for seed, todo in enumerate(per_seed, start=1) for t, p in todo
            for j in named_jobs(t, p, seed)]
    results = iter(run_jobs([replace(j, keep_series=False) for j in flat], args.workers))
    names = [t.name for t, _ in per_seed[0]]
    by_trace: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for todo in per_seed:
        for t, _ in todo:
            by_trace[t.name].append({p: next(results) for p in POLICIES})
    for name, seeds in by_trace.items():
        stats, pairs = paired.summarize(seeds)
        print(paired.table(name, stats, pairs))
        print()


STARTUPS = (5.0, 20.0, 60.0, 120.0)


def _startup_sweep(args: argparse.Namespace, todo: list[tuple[Trace, PoolProfile]]) -> None:
    from autoscaler.simulate import report
    from autoscaler.simulate.runner import POLICIES, run_all

    cases = [(t, replace(p, startup_s=s)) for s in STARTUPS for t, p in todo]
    runs = run_all(cases, args.workers)
    print("== start-up sweep: SLO-violation s / replica-s per policy ==")
    print(f"{'trace':<32} {'start-up':>8} " + " ".join(f"{p:>14}" for p in POLICIES))
    for r in runs:
        cells = [report.scores(r.results[p]) for p in POLICIES]
        print(f"{r.trace.name:<32} {r.profile.startup_s:>7g}s " + " ".join(
            f"{c['slo_violation_s']:>6}/{c['replica_s']:<7}" for c in cells))
    print()
