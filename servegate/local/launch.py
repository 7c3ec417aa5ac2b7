"""Start and stop Triton worker processes (demo, tests, benchmarks) without orphans.

Each worker runs in its own session (process group) so that stopping it also stops the
``tritonserver`` and Python-backend stubs it spawned, and stops when the process that started
it dies (the parent-death signal where it was started on the main thread, and the worker's own
parent watch everywhere), so none outlives its parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from adapters.procs import die_with_parent
from servegate.local.triton_worker import READY_LINE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def triton_env() -> dict[str, str]:
    """The environment a PyTriton process needs: LD_LIBRARY_PATH includes Python's LIBDIR."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p
    )
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass
class TritonProcess:
    http_port: int
    grpc_port: int
    metrics_port: int
    proc: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, as the tests need)."""
        _signal_group(self.proc, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        _signal_group(self.proc, signal.SIGKILL)  # stubs left behind by the group, if any
        if self.proc.poll() is None:
            self.proc.wait(5)


def _signal_group(proc: subprocess.Popen[str], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def start_triton(
    models: Sequence[str] = ("classifier", "embedder", "identity"),
    classifier_version: int = 1,
    ports: tuple[int, int, int] | None = None,
    timeout: float = 120.0,
    quiet: bool = True,
    attempts: int = 2,
    extra_args: Sequence[str] = (),
) -> TritonProcess:
    """Start a worker and wait (with a deadline) until it prints its ready line.

    PyTriton's Python-backend handshake has a 1 s timeout that a loaded 2-core machine can
    miss while several servers start at once; a failed start is retried (fresh ports unless
    ``ports`` is given) and the last failure, with the worker's log, is raised.
    """
    for attempt in range(attempts):
        try:
            return _start_once(models, classifier_version, ports, timeout, quiet, extra_args)
        except RuntimeError as exc:
            if attempt == attempts - 1:
                raise
            sys.stderr.write(f"Triton worker start failed, retrying: {str(exc)[-2000:]}\n")
    raise AssertionError("unreachable")


def _start_once(
    models: Sequence[str], classifier_version: int, ports: tuple[int, int, int] | None,
    timeout: float, quiet: bool, extra_args: Sequence[str] = (),
) -> TritonProcess:
    http, grpc, metrics = ports or (free_port(), free_port(), free_port())
    cmd = [
        sys.executable, "-m", "servegate.local.triton_worker",
        "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
        "--models", ",".join(models), "--classifier-version", str(classifier_version),
        *extra_args,
    ]
    proc = subprocess.Popen(
        cmd, env=triton_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True, preexec_fn=die_with_parent(),
    )
    tp = TritonProcess(http, grpc, metrics, proc)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            tp.log.append(line)
            del tp.log[:-400]
            if READY_LINE in line:
                ready.set()
            elif not quiet:
                sys.stderr.write(line)
        ready.set()

    threading.Thread(target=pump, daemon=True, name=f"triton-{http}").start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.2):
        if time.monotonic() > deadline:
            break
    if proc.poll() is not None or not any(READY_LINE in ln for ln in tp.log):
        tp.stop()
        raise RuntimeError("Triton worker failed to start:\n" + "".join(tp.log[-60:]))
    return tp
