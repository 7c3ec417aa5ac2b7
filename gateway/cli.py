"""The ``servegate`` command: ``gateway``, ``demo`` and ``check-config``.

Each subcommand builds its settings from the command line once and passes them in; nothing
reads the environment at import time.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from router import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="servegate", description="Inference gateway for Triton")
    sub = p.add_subparsers(dest="command", required=True)

    gw = sub.add_parser("gateway", help="run the data plane (REST)")
    gw.add_argument("--config", required=True, type=Path, help="servegate YAML config")
    gw.add_argument("--host", default="0.0.0.0")
    gw.add_argument("--http-port", type=int, default=8000)
    gw.add_argument("--grpc-port", type=int, default=8001,
                    help="reserved for the gRPC front door (not served yet)")
    gw.add_argument("--watch", action="store_true", help="reload the config when the file changes")
    gw.add_argument("--log-level", default="info")

    demo = sub.add_parser("demo", help="local Triton servers + gateway, no Kubernetes needed")
    demo.add_argument("--http-port", type=int, default=8000)
    demo.add_argument("--grpc-port", type=int, default=8001,
                      help="reserved for the gRPC front door (not served yet)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--triton-instances", type=int, default=2,
                      help="Triton servers in the demo's main pool")
    demo.add_argument("--log-level", default="info")

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "info").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "gateway":
            from gateway.server import run
            from gateway.settings import GatewaySettings, ServerSettings

            run(GatewaySettings(
                config_path=args.config, watch=args.watch,
                server=ServerSettings(host=args.host, http_port=args.http_port,
                                      grpc_port=args.grpc_port, log_level=args.log_level)))
        elif args.command == "demo":
            from gateway.demo.runner import DemoSettings, run_demo

            return run_demo(DemoSettings(
                host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                triton_instances=args.triton_instances, log_level=args.log_level))
        elif args.command == "check-config":
            from gateway.config import load_config_file

            cfg = load_config_file(args.config)
            print(f"{args.config}: OK ({len(cfg.pools)} pools, {len(cfg.models)} models)")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
