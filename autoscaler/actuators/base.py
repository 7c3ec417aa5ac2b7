"""The actuator port: what the control loop needs from whatever runs a pool's replicas.

Where it sits: the last step of collect -> decide -> act. The loop reads a pool's size with
:meth:`Actuator.current` and asks for a new one with :meth:`Actuator.scale`; one small
interface for every backend kind (knative's ``kpa/scaler.go``):

- :class:`~autoscaler.actuators.local.LocalActuator` - real Triton processes on this host;
- :class:`~autoscaler.actuators.kubernetes.ScaleActuator` - a Deployment's scale subresource;
- :class:`~autoscaler.keda.server.KedaActuator` - KEDA's external scaler (push + metrics);
- :class:`ExportedActuator` - nothing to call: the decision is only published (``hpa``: the
  HPA reads ``servegate_autoscaler_desired_replicas`` through prometheus-adapter; ``none``:
  a dry run).

Contract: ``scale`` is idempotent (it reads the current size and changes something only on a
difference) and raises :class:`~autoscaler.errors.ActuatorError` naming the target, with the
library's error chained. An actuator that knows how many replicas *serve* (not just exist)
also implements :class:`ReadyCounter`; otherwise the loop takes every replica as ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable


class Actuator(Protocol):
    """Reads and sets a pool's replica count."""

    async def current(self, pool: str) -> int:
        """Replicas the pool has now (starting ones included)."""
        ...

    async def scale(self, pool: str, replicas: int) -> None:
        """Make the pool ``replicas`` large; a no-op when it already is."""
        ...


@runtime_checkable
class ReadyCounter(Protocol):
    """An actuator that also knows how many of a pool's replicas serve."""

    async def ready(self, pool: str) -> int:
        ...


class ExportedActuator:
    """An actuator with nothing to call: it remembers the decision as the pool's size.

    For the ``hpa`` and ``none`` modes (and the KEDA actuator builds on it): something else
    (an HPA, KEDA, a person) acts on the published number, so the decider's view of the size
    is the size it last asked for, starting from ``initial`` (the pools' minimums).
    """

    def __init__(self, initial: Mapping[str, int]) -> None:
        self._size = dict(initial)
        self.changes = 0

    async def current(self, pool: str) -> int:
        return self._size.get(pool, 0)

    async def scale(self, pool: str, replicas: int) -> None:
        if self._size.get(pool) != replicas:
            self._size[pool] = replicas
            self.changes += 1


class TeeActuator:
    """``primary`` acts; ``mirror`` is told every decision too (e.g. the local actuator runs
    the replicas while KEDA's external scaler reports the same numbers)."""

    def __init__(self, primary: Actuator, mirror: Actuator) -> None:
        self.primary = primary
        self.mirror = mirror

    async def current(self, pool: str) -> int:
        return await self.primary.current(pool)

    async def scale(self, pool: str, replicas: int) -> None:
        await self.primary.scale(pool, replicas)
        await self.mirror.scale(pool, replicas)

    async def ready(self, pool: str) -> int:
        if isinstance(self.primary, ReadyCounter):
            return await self.primary.ready(pool)
        return await self.primary.current(pool)
