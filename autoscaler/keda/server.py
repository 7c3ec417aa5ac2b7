"""The KEDA actuator: servegate's decisions served as KEDA's ``externalscaler.ExternalScaler``.

Where it sits: behind the :class:`~autoscaler.actuators.base.Actuator` port for
``servegate autoscaler --actuator keda``. KEDA owns the Deployment and its HPA; the
autoscaler only answers KEDA's calls (REFERENCE §6) so that KEDA lands on servegate's count:

- a ScaledObject names the pool in its trigger metadata (``scalerMetadata["pool"]``);
- ``IsActive``: the pool's decision is above zero. KEDA scales 0 -> max(minReplicaCount, 1)
  when active, and to 0 after ``cooldownPeriod`` of inactivity (servegate's own idle grace
  has then already passed);
- ``StreamIsActive`` (trigger type ``external-push``): the current activity when the stream
  opens, then every change - in particular ``true`` the moment an activation wakes a pool at
  zero (the loop decides 1 within milliseconds and :meth:`KedaActuator.scale` pushes);
- ``GetMetricSpec``: one metric per pool, ``servegate-<pool>``, target ``metric_target``
  (``autoscaling.pools.<pool>.keda.metric_target``, default 100);
- ``GetMetrics``: ``desired x metric_target`` - the *total* the HPA's AverageValue divides by
  the target, so ceil(total / target) = servegate's desired count whatever the current one.
  Both the float and the deprecated int fields are filled (KEDA falls back to the int when
  the float is 0). The HPA's own 10% tolerance still applies on top.
- ``StreamMetricSpec``: not implemented (UNIMPLEMENTED, which KEDA takes as "not offered").

A ScaledObject for it::

    apiVersion: keda.sh/v1alpha1
    kind: ScaledObject
    metadata: {name: triton-cpu}
    spec:
      scaleTargetRef: {name: triton-cpu}
      minReplicaCount: 0
      maxReplicaCount: 8
      cooldownPeriod: 30
      triggers:
        - type: external-push
          metadata: {scalerAddress: "servegate-autoscaler:9095", pool: cpu}

Unknown or missing ``pool``: ``NOT_FOUND`` / ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import grpc

from autoscaler.actuators.base import ExportedActuator
from autoscaler.keda import externalscaler_pb2 as pb
from autoscaler.keda import externalscaler_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


def metric_name(pool: str) -> str:
    return "servegate-" + (re.sub(r"[^a-z0-9-]+", "-", pool.lower()).strip("-") or "pool")


class KedaActuator(ExportedActuator):
    """Remembers each pool's decision and pushes activity changes to the open streams."""

    def __init__(self, initial: Mapping[str, int], metric_targets: Mapping[str, float]) -> None:
        super().__init__(initial)
        self.targets = dict(metric_targets)
        self._streams: dict[str, set[asyncio.Queue[bool]]] = {p: set() for p in initial}

    def active(self, pool: str) -> bool:
        return self._size.get(pool, 0) > 0

    async def scale(self, pool: str, replicas: int) -> None:
        was = self.active(pool)
        await super().scale(pool, replicas)
        if self.active(pool) != was:
            for queue in self._streams.get(pool, ()):
                queue.put_nowait(self.active(pool))

    @contextmanager
    def subscribe(self, pool: str) -> Iterator[asyncio.Queue[bool]]:
        queue: asyncio.Queue[bool] = asyncio.Queue()
        self._streams.setdefault(pool, set()).add(queue)
        try:
            yield queue
        finally:
            self._streams[pool].discard(queue)

    def metric(self, pool: str) -> tuple[str, float, float]:
        """(metric name, target per replica, value = desired x target)."""
        target = self.targets.get(pool, 100.0)
        return metric_name(pool), target, self._size.get(pool, 0) * target


class ExternalScaler(pb_grpc.ExternalScalerServicer):
    def __init__(self, actuator: KedaActuator) -> None:
        self.actuator = actuator

    async def _pool(self, ref: pb.ScaledObjectRef, context: Any) -> str:
        pool = ref.scalerMetadata.get("pool", "")
        if not pool:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"ScaledObject {ref.namespace}/{ref.name}: set "
                                f"'pool' in the trigger metadata")
        if pool not in self.actuator.targets:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"ScaledObject {ref.namespace}/{ref.name}: unknown pool "
                                f"{pool!r}; pools: {sorted(self.actuator.targets)}")
        return pool

    async def IsActive(self, request: pb.ScaledObjectRef, context: Any) -> pb.IsActiveResponse:
        pool = await self._pool(request, context)
        return pb.IsActiveResponse(result=self.actuator.active(pool))

    async def StreamIsActive(self, request: pb.ScaledObjectRef,
                             context: Any) -> AsyncIterator[pb.IsActiveResponse]:
        pool = await self._pool(request, context)
        with self.actuator.subscribe(pool) as queue:
            last = self.actuator.active(pool)
            yield pb.IsActiveResponse(result=last)
            while True:
                active = await queue.get()
                yield pb.IsActiveResponse(result=active)

    async def GetMetricSpec(self, request: pb.ScaledObjectRef,
                            context: Any) -> pb.GetMetricSpecResponse:
        name, target, _ = self.actuator.metric(await self._pool(request, context))
        return pb.GetMetricSpecResponse(metricSpecs=[
            pb.MetricSpec(metricName=name, targetSize=round(target), targetSizeFloat=target)])

    async def GetMetrics(self, request: pb.GetMetricsRequest,
                         context: Any) -> pb.GetMetricsResponse:
        name, _, value = self.actuator.metric(await self._pool(request.scaledObjectRef, context))
        return pb.GetMetricsResponse(metricValues=[
            pb.MetricValue(metricName=name, metricValue=round(value), metricValueFloat=value)])


class KedaServer:
    """The gRPC server on ``host:port`` while in ``async with``; ``port`` 0 picks one."""

    def __init__(self, actuator: KedaActuator, host: str, port: int) -> None:
        self.server = grpc.aio.server()
        pb_grpc.add_ExternalScalerServicer_to_server(  # type: ignore[no-untyped-call]
            ExternalScaler(actuator), self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{port}")

    async def __aenter__(self) -> KedaServer:
        await self.server.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.server.stop(grace=1.0)
