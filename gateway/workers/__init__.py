"""``servegate gateway --workers N``: N gateway processes serving one port, one pod's metrics.

Where it sits: beside :mod:`gateway.server`. :mod:`gateway.workers.parent` is the supervising
parent (starts the workers, forwards signals, restarts a worker that dies);
:mod:`gateway.workers.child` is a worker's entry, which runs :func:`gateway.server.serve` with
``settings.worker`` set; :mod:`gateway.workers.podmetrics` and :mod:`gateway.workers.merge` make
``/metrics`` on any worker the whole pod's. With ``--workers 1`` none of this runs.
"""

from __future__ import annotations

# A worker prints this line once it serves (listeners open); its parent waits for it.
WORKER_READY = "servegate worker ready"

__all__ = ["WORKER_READY"]
