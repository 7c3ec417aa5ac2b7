"""Child processes that never outlive the process that started them.

Where it sits: under every launcher of servegate's own processes - the demo runner (gateway,
autoscaler, Triton workers), the test and benchmark fixtures (``gateway/demo/launch.py``) and
the autoscaler's local actuator (``autoscaler/actuators/process.py``). Each passes
:func:`die_with_parent` as ``preexec_fn``: Linux then signals the child when its parent dies,
however it dies (SIGKILL, an OOM kill, a crashed terminal, a CI time-out), and the child's own
SIGTERM handling stops what it started in turn (a Triton worker its ``tritonserver``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks the kernel to send ``sig`` to the child when the parent
    exits; ``None`` where the platform has no parent-death signal.

    The parent's pid is read before the fork: a parent that died between the fork and the
    ``prctl`` call is caught by comparing it with ``getppid()`` afterwards.
    """
    if not sys.platform.startswith("linux"):
        return None
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
