"""Child processes that never outlive the process that started them.

Where it sits: under every launcher of servegate's own processes - the demo runner (gateway,
autoscaler, Triton workers), the test and benchmark fixtures (``servegate/local/launch.py``) and
the autoscaler's local actuator (``autoscaler/actuators/process.py``). Each passes
:func:`die_with_parent` as ``preexec_fn``: Linux then signals the child when its parent dies,
however it dies (SIGKILL, an OOM kill, a crashed terminal, a CI time-out), and the child's own
SIGTERM handling stops what it started in turn (a Triton worker its ``tritonserver``).

Linux sends the parent-death signal when the *thread* that forked the child exits, not the
process: a child started from a pool thread would be stopped as soon as that thread ends. So
:func:`die_with_parent` arms it only on the main thread, and a child that may be started from
another thread (the Triton workers of the demo and the fixtures start in parallel) also runs
:func:`watch_parent`, which notices the process-level event - being re-parented.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks the kernel to send ``sig`` to the child when the parent
    exits; ``None`` where the platform has no parent-death signal.

    The parent's pid is read before the fork: a parent that died between the fork and the
    ``prctl`` call is caught by comparing it with ``getppid()`` afterwards. ``None`` too
    off the main thread (see the module's docstring).
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None  # it would fire when this thread ends: the child must watch_parent()
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def watch_parent(on_orphaned: Callable[[], None], every_s: float = 0.5) -> threading.Thread:
    """Call ``on_orphaned()`` once, from a daemon thread, when this process's parent exits
    (this process is re-parented: ``getppid()`` changes). For a child's ``main``."""
    parent = os.getppid()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every_s):
            if os.getppid() != parent:
                stop.set()
                on_orphaned()

    thread = threading.Thread(target=watch, daemon=True, name="watch-parent")
    thread.start()
    return thread
