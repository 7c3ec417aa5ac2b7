"""One worker of ``servegate gateway --workers N``: ``python -m gateway.workers.child FILE``.

Where it sits: started by :mod:`gateway.workers.parent` through :mod:`adapters.procs` (own
session, parent-death signal). FILE holds this worker's settings (pickled by the parent into
its private 0700 directory: they may carry the admin token, so never on the command line); it
is read once and removed. Then it is :func:`gateway.server.run`, with ``settings.worker`` set.
A worker that outlives its parent (killed: the parent-death signal made it drain) removes the
parent's directory once it is empty.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
from pathlib import Path

from gateway.settings import GatewaySettings


def main(argv: list[str]) -> int:
    path = Path(argv[1])
    settings = pickle.loads(path.read_bytes())
    path.unlink()
    if not isinstance(settings, GatewaySettings) or settings.worker is None:
        raise SystemExit(f"{path}: not a worker's settings")
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[w{settings.worker.index}]: %(message)s")
    from gateway.server import run

    parent = os.getppid()
    try:
        run(settings)
    finally:
        if os.getppid() != parent:  # orphaned (the parent was killed): the last one tidies up
            with contextlib.suppress(OSError):
                settings.worker.sockets_dir.rmdir()  # only once empty
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
