"""The ``servegate`` command: ``gateway``, ``demo``, ``check-config``, ``cost``, ``autoscaler``,
``simulate``.

Where it sits: the entry point (``[project.scripts]``), and the only module that imports both
``gateway`` and ``autoscaler``; each process is built by its own package. Each subcommand
builds its settings from the command line once and passes them in; nothing reads the
environment at import time.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from contracts import ConfigError
from gateway.errors import TracingUnavailable


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="servegate", description="Inference gateway for Triton")
    sub = p.add_subparsers(dest="command", required=True)

    gw = sub.add_parser("gateway", help="run the data plane (REST and gRPC)")
    gw.add_argument("--config", required=True, type=Path, help="servegate YAML config")
    gw.add_argument("--host", default="0.0.0.0")
    gw.add_argument("--http-port", type=int, default=8000)
    gw.add_argument("--grpc-port", type=int, default=8001,
                    help="gRPC front door (inference.GRPCInferenceService); 0 turns it off")
    gw.add_argument("--watch", action="store_true", help="reload the config when the file changes")
    gw.add_argument("--redis-url", default=None,
                    help="share split weights and rollouts through Redis "
                         "(default: $SERVEGATE_REDIS_URL; unset keeps them in memory)")
    gw.add_argument("--replica-id", default="", help="this replica's name in the shared state")
    gw.add_argument("--admin-token-file", type=Path, default=None,
                    help="file holding the admin API token (default: $SERVEGATE_ADMIN_TOKEN; "
                         "neither set disables the admin API)")
    gw.add_argument("--api-keys-file", type=Path, default=None,
                    help="tenant -> API key hashes (YAML), used when the config has an 'auth' "
                         "section (default: $SERVEGATE_API_KEYS_FILE, else the document in "
                         "$SERVEGATE_API_KEYS); re-read on reload")
    gw.add_argument("--traffic-tick-s", type=float, default=2.0,
                    help="how often rollouts are judged")
    gw.add_argument("--autoscaler-url", default=None,
                    help="the autoscaler's status server (e.g. http://127.0.0.1:9096), told at "
                         "once when a request arrives for a pool with no ready endpoint")
    gw.add_argument("--log-level", default="info")
    gw.add_argument("--shutdown-delay-s", type=float, default=0.0,
                    help="on SIGTERM, keep serving this long with readiness false before "
                         "closing the listeners (time for Kubernetes to drop the pod)")
    gw.add_argument("--graceful-shutdown-s", type=float, default=30.0,
                    help="on SIGTERM, how long in-flight requests and cold-start waits may "
                         "take once the listeners are closed")
    gw.add_argument("--otlp-endpoint", default=None, metavar="URL",
                    help="turn tracing on: OpenTelemetry spans of each request's phases, sent "
                         "over OTLP/gRPC to this collector (e.g. http://otel-collector:4317); "
                         "needs `pip install servegate[tracing]`; the exporter's OTEL_* "
                         "variables apply")
    gw.add_argument("--trace-sample-ratio", type=_ratio, default=1.0, metavar="F",
                    help="with tracing on, the share of requests traced when the caller sends "
                         "no traceparent (default 1.0); a caller's sampled flag always decides")
    gw.add_argument("--workers", type=_positive, default=1,
                    help="gateway processes serving the same ports (SO_REUSEPORT) under a "
                         "supervising parent; /metrics on any shows the whole pod's (default 1: "
                         "this process serves)")

    demo = sub.add_parser("demo", help="local Triton servers + gateway, no Kubernetes needed")
    demo.add_argument("--http-port", type=int, default=8000)
    demo.add_argument("--grpc-port", type=int, default=8001,
                      help="the gateway's gRPC front door")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--autoscaler-port", type=int, default=9096,
                      help="the autoscaler's status server (/status, /activate)")
    demo.add_argument("--keda-port", type=int, default=9095,
                      help="KEDA's external scaler (gRPC), served by the demo's autoscaler")
    demo.add_argument("--triton-instances", type=int, default=2,
                      help="Triton servers in the demo's main pool")
    demo.add_argument("--log-level", default="info")

    sub.add_parser("hash-key", help="read an API key on stdin, print its stored form "
                                   "(sha256:...) for the --api-keys-file document")

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", type=Path)

    cost = sub.add_parser("cost", help="print what each pool, model and tenant cost, from a "
                                       "running gateway's GET /admin/cost")
    cost.add_argument("--since", default="1h", help="window: 90s, 15m, 1h, 1d (default 1h)")
    cost.add_argument("--by", choices=("model", "tenant", "pool"), default=None,
                      help="sum rows by one label (default: one row per pool, model, tenant)")
    cost.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway's REST URL")
    cost.add_argument("--token", default=None,
                      help="admin token (default: $SERVEGATE_ADMIN_TOKEN)")
    cost.add_argument("--token-file", type=Path, default=None, help="file holding the token")
    cost.add_argument("--json", action="store_true", help="print the report's JSON instead")

    from autoscaler.cli import add_subcommands  # the one place wiring both packages

    add_subcommands(sub)
    return p


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not within [0, 1]")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _admin_token(path: Path | None) -> str | None:
    """The admin token from a file (e.g. a mounted Secret) or $SERVEGATE_ADMIN_TOKEN."""
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(f"cannot read the admin token file {path}: {exc}") from exc
        if not token:
            raise SystemExit(f"the admin token file {path} is empty")
        return token
    return os.environ.get("SERVEGATE_ADMIN_TOKEN") or None


def _api_keys_file(path: Path | None) -> Path | None:
    if path is not None:
        return path
    env = os.environ.get("SERVEGATE_API_KEYS_FILE")
    return Path(env) if env else None


def _hash_key() -> int:
    """Read an API key from stdin; print the line to store in the keys file."""
    from gateway.pipeline.auth import hash_key

    key = sys.stdin.readline().strip()
    if not key:
        print("no key on standard input", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "info").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("simulate", "autoscaler"):
        from autoscaler.cli import run as run_autoscaler_command

        return run_autoscaler_command(args)
    if args.command == "hash-key":
        return _hash_key()
    if args.command == "cost":
        from servegate.cost import run_cost

        token = args.token or _admin_token(args.token_file)
        return run_cost(args.url, args.since, args.by, token, args.json)
    try:
        if args.command == "gateway":
            from gateway.settings import GatewaySettings, ServerSettings, TracingSettings

            settings = GatewaySettings(
                config_path=args.config, watch=args.watch,
                server=ServerSettings(host=args.host, http_port=args.http_port,
                                      grpc_port=args.grpc_port, log_level=args.log_level,
                                      shutdown_delay_s=args.shutdown_delay_s,
                                      graceful_shutdown_s=args.graceful_shutdown_s),
                redis_url=args.redis_url or os.environ.get("SERVEGATE_REDIS_URL") or None,
                replica_id=args.replica_id, admin_token=_admin_token(args.admin_token_file),
                traffic_tick_s=args.traffic_tick_s, autoscaler_url=args.autoscaler_url,
                api_keys_file=_api_keys_file(args.api_keys_file), workers=args.workers,
                tracing=TracingSettings(enabled=args.otlp_endpoint is not None,
                                        otlp_endpoint=args.otlp_endpoint,
                                        sample_ratio=args.trace_sample_ratio))
            if settings.workers > 1:  # a light supervising parent, N workers
                from gateway.workers.parent import run_workers

                return run_workers(settings)
            from gateway.server import run

            run(settings)
        elif args.command == "demo":
            from servegate.demo import DemoSettings, run_demo

            return run_demo(DemoSettings(
                host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                triton_instances=args.triton_instances, log_level=args.log_level,
                autoscaler_port=args.autoscaler_port, keda_port=args.keda_port))
        elif args.command == "check-config":
            from adapters.configfile import load_config_file

            cfg = load_config_file(args.config)
            print(f"{args.config}: OK ({len(cfg.pools)} pools, {len(cfg.models)} models)")
    except (ConfigError, TracingUnavailable) as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
