"""One real Triton server (PyTriton) serving the demo models on given ports.

Run as its own process by ``servegate demo`` and the test fixtures:

    python -m servegate.local.triton_worker --http-port 8100 --grpc-port 8101 --metrics-port 8102

It prints ``SERVEGATE_TRITON_READY`` once every model answers ready, and stops Triton (no
orphaned ``tritonserver``) on SIGTERM or SIGINT, or when the process that started it exits
(:func:`adapters.procs.watch_parent`: it may have been started from a thread, where the
parent-death signal does not hold). The parent must set ``LD_LIBRARY_PATH`` to
Python's LIBDIR (see :func:`adapters.procs.python_env`) so the Python backend stub loads
the same libpython as this interpreter.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

READY_LINE = "SERVEGATE_TRITON_READY"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="triton_worker", description=__doc__)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--models", default="classifier,embedder,identity")
    p.add_argument("--classifier-version", type=int, default=1)
    p.add_argument("--classifier-fail-rate", type=float, default=0.0,
                   help="share of classifier batches that raise (rollout demos and tests)")
    p.add_argument("--classifier-delay-ms", type=float, default=0.0,
                   help="sleep per classifier batch (a slow variant)")
    p.add_argument("--address", default="127.0.0.1")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    from adapters.procs import watch_parent
    from servegate.local.models import Faults, demo_models

    faults = Faults(args.classifier_fail_rate, args.classifier_delay_ms)
    models = demo_models([m for m in args.models.split(",") if m], args.classifier_version,
                         faults)
    config = TritonConfig(
        http_address=args.address, http_port=args.http_port,
        grpc_address=args.address, grpc_port=args.grpc_port,
        metrics_address=args.address, metrics_port=args.metrics_port,
        allow_metrics=True, exit_timeout_secs=5, log_verbose=0,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    watch_parent(stop.set)
    triton = Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[]))
    try:
        for m in models:
            batched = m.max_batch_size > 0
            triton.bind(
                model_name=m.name, model_version=m.version,
                infer_func=batch(m.fn) if batched else m.fn,
                inputs=[Tensor(name=t.name, dtype=t.dtype, shape=t.shape, optional=t.optional)
                        for t in m.inputs],
                outputs=[Tensor(name=t.name, dtype=t.dtype, shape=t.shape) for t in m.outputs],
                config=ModelConfig(
                    batching=batched, max_batch_size=max(m.max_batch_size, 1),
                    batcher=DynamicBatcher(
                        max_queue_delay_microseconds=100, priority_levels=m.priority_levels,
                        default_priority_level=2 if m.priority_levels else 0),
                    decoupled=m.decoupled,
                ),
                strict=False,
            )
        triton.run()
        print(READY_LINE, flush=True)
        while not stop.wait(0.5):
            if not triton.is_alive():
                print("tritonserver exited", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        triton.stop()


if __name__ == "__main__":
    sys.exit(main())
