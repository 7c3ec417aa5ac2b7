"""The autoscaler's ``servegate`` subcommands: ``autoscaler`` and ``simulate``.

Where it sits: ``servegate/cli.py`` (the ``servegate`` entry point) calls
:func:`add_subcommands` while building its parser and hands a parsed ``autoscaler`` or
``simulate`` to :func:`run`. Arguments become settings once, here; nothing reads the
environment (only the Kubernetes connection looks for in-cluster variables, at start).

``servegate autoscaler --config FILE [--actuator local|kubernetes|keda|hpa|none]
[--status-port 9096] [--keda-port 9095] [--gateway URL ...] [--redis-url URL] ...`` runs the
control loop (see :mod:`autoscaler.main`); ``--help`` lists the Kubernetes and lease flags.

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
    """Run ``autoscaler`` or ``simulate``; returns the process exit code."""
    if args.command == "autoscaler":
        return _run_autoscaler(args)
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
