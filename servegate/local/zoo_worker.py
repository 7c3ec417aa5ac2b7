"""One Triton server in explicit model-control mode over the zoo models, on given ports.

Where it sits: a replica of a model-managed pool started by the autoscaler's local actuator
(``autoscaling.pools.<pool>.local.module: servegate.local.zoo_worker``), so such a pool can
scale from and to zero on one machine (two-tier zero: models unload on a warm server first,
the server itself goes when no model has demand). Never on the request path.

    python -m servegate.local.zoo_worker --http-port 8100 --grpc-port 8101 --metrics-port 8102 \\
        --models zoo-00,zoo-01

It writes the models' repository to a temporary directory, starts ``tritonserver`` (nothing
loaded), prints ``SERVEGATE_TRITON_READY`` once it answers ready, and stops it on SIGTERM or
SIGINT.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from adapters.errors import ProcessStartError
from servegate.local.triton_worker import READY_LINE
from servegate.local.zoo import start_zoo_triton, write_zoo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="zoo_worker", description=__doc__)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--models", required=True, help="comma-separated model names")
    args = p.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    if not names:
        p.error("--models names no model")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    workdir = Path(tempfile.mkdtemp(prefix="servegate-zoo-worker-"))
    try:
        triton = start_zoo_triton(write_zoo(workdir / "repository", names), workdir,
                                  ports=(args.http_port, args.grpc_port, args.metrics_port),
                                  own_session=False)
    except ProcessStartError as exc:
        print(exc, file=sys.stderr, flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
        return 1
    try:
        print(READY_LINE, flush=True)
        while not stop.wait(0.5):
            if not triton.alive():
                print("tritonserver exited:\n" + "\n".join(triton.log[-40:]), file=sys.stderr)
                return 1
        return 0
    finally:
        triton.stop()  # SIGTERM (Triton unloads and stops its stubs), SIGKILL if it lingers
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
