"""Endpoint discovery for pools whose endpoints are not listed in the config.

Where it sits: a background task beside the prober, keeping one watcher per discovered pool
(restarted when the pool's ``discovery`` settings change, stopped when the pool goes). Each
watcher swaps the pool's endpoints in the runtime
(:meth:`gateway.pipeline.runtime.Runtime.set_endpoints`), then tells the cold-start buffer, which
wakes requests held for that pool.

- ``local``: long-polls the autoscaler's local actuator
  (``GET {url}/pools/{pool}/endpoints?version=N&wait_s=S``: the READY replicas and a version
  that changes with them).
- ``kubernetes``: follows the Service's EndpointSlices (:mod:`gateway.jobs.discovery_k8s`; RBAC:
  ``get, list, watch`` on ``discovery.k8s.io`` ``endpointslices``).

Static pools need nothing. Failures are logged and retried; a pool keeps its last endpoints.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from contracts import EndpointConfig
from contracts.config import DiscoveryConfig
from gateway.adapters.upstream import Upstream
from gateway.errors import DiscoveryError, UpstreamError
from gateway.jobs.discovery_k8s import (
    RETRY_S,
    SliceApi,
    SliceWatch,
    load_kube_connection,
    load_slice_api,
)
from gateway.pipeline.runtime import Runtime

__all__ = ["Discovery", "DiscoveryError", "check_supported"]

log = logging.getLogger("servegate.discovery")

_LONG_POLL_S = 5.0
_RETRY_S = 0.5
_CONFIG_RETRY_S = 5.0  # no Kubernetes API configuration yet (e.g. the token not mounted)


def check_supported(runtime: Runtime) -> None:
    """Fail start-up, not the first request, when a pool uses kubernetes discovery but no API
    configuration (in-cluster service account, else kubeconfig) can be loaded."""
    for name, pool in runtime.state.config.pools.items():
        if pool.discovery.type == "kubernetes":
            try:
                load_kube_connection()
            except DiscoveryError as exc:
                raise DiscoveryError(f"pool '{name}': {exc}") from exc
            return


class Discovery:
    def __init__(self, runtime: Runtime, upstream: Upstream, on_change: Callable[[str], None],
                 kube_api: Callable[[], SliceApi] = load_slice_api,
                 kube_retry_s: float = RETRY_S) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.on_change = on_change
        self._kube_factory = kube_api  # blocking; called in a worker thread, once
        self._kube_retry_s = kube_retry_s
        self._kube: SliceApi | None = None
        self._kube_lock = asyncio.Lock()
        self._tasks: dict[str, tuple[DiscoveryConfig, asyncio.Task[None]]] = {}

    async def run(self) -> None:
        """Keep one watcher per discovered pool, following config reloads."""
        try:
            while True:
                self._sync_watchers()
                await asyncio.sleep(1.0)
        finally:
            tasks = [task for _, task in self._tasks.values()]
            self._tasks.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._kube is not None:
                await self._kube.aclose()
                self._kube = None

    def _sync_watchers(self) -> None:
        wanted = {name: p.discovery for name, p in self.runtime.state.config.pools.items()
                  if p.discovery.type != "static"}
        for name, (spec, task) in list(self._tasks.items()):
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("discovery of pool %s stopped; restarting it", name,
                          exc_info=task.exception())
            if wanted.get(name) != spec or task.done():
                task.cancel()
                del self._tasks[name]
        for name, spec in wanted.items():
            if name not in self._tasks:
                watcher: Coroutine[Any, Any, None] = (
                    self._watch(name) if spec.type == "local" else self._watch_slices(name, spec))
                self._tasks[name] = (spec, asyncio.create_task(watcher, name=f"discovery-{name}"))

    async def _watch_slices(self, pool: str, spec: DiscoveryConfig) -> None:
        api = await self._kube_api()
        await SliceWatch(api, spec, lambda endpoints: self._publish(pool, endpoints),
                         retry_s=self._kube_retry_s, name=pool).run()

    async def _kube_api(self) -> SliceApi:
        """The one API client all kubernetes pools share, made on first need."""
        async with self._kube_lock:
            while self._kube is None:
                try:
                    self._kube = await asyncio.to_thread(self._kube_factory)
                except DiscoveryError as exc:
                    log.warning("kubernetes discovery: %s", exc)
                    await asyncio.sleep(_CONFIG_RETRY_S)
            return self._kube

    def _publish(self, pool: str, endpoints: list[EndpointConfig]) -> None:
        self.runtime.set_endpoints(pool, endpoints)
        self.on_change(pool)

    async def _watch(self, pool: str) -> None:
        version: object = None
        while True:
            cfg = self.runtime.state.config.pools.get(pool)
            if cfg is None or cfg.discovery.url is None:
                return
            parts = urlsplit(cfg.discovery.url)
            target = f"/pools/{pool}/endpoints?wait_s={_LONG_POLL_S:g}"
            if version is not None:
                target += f"&version={version}"
            try:
                resp = await self.upstream.request(
                    parts.hostname or "127.0.0.1", parts.port or 80, b"GET", target.encode(),
                    [], b"", 1.0, _LONG_POLL_S + 5.0)
                if resp.status != 200:
                    raise DiscoveryError(f"HTTP {resp.status}: {resp.body[:200]!r}")
                doc = json.loads(resp.body)
                endpoints = [EndpointConfig.model_validate(e) for e in doc["endpoints"]]
            except (UpstreamError, DiscoveryError, ValueError, KeyError, TypeError) as exc:
                log.warning("discovery of pool %s failed: %s", pool, exc)
                await asyncio.sleep(_RETRY_S)
                continue
            if doc.get("version") != version:
                version = doc.get("version")
                current = [e.config for e in self.runtime.state.pools[pool].endpoints]
                if endpoints != current:
                    self.runtime.set_endpoints(pool, endpoints)
                self.on_change(pool)
