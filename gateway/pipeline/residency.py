"""Model-managed pools: which endpoint holds which model, loads on demand, eviction, idle unload.

Where it sits: between "route" and "pick" in :meth:`gateway.pipeline.proxy.Proxy.call`, for pools
with ``model_control: explicit`` only (an ordinary pool never reaches this module):

- :meth:`Residency.holding` narrows the pool's endpoints to those holding the model (the
  proxy then picks among them, power of two choices) and records the call's demand;
- when none holds it, :meth:`Residency.wait_loaded` starts ONE load of the model (single
  flight per (pool, model) in this process; across gateways a Redis ``SET NX`` lock, see
  :mod:`gateway.adapters.residency_store`) and holds the call in the cold-start buffer
  (:meth:`gateway.pipeline.coldstart.ColdStart.wait_for_model`: bounded, deadline-aware) until the
  model is READY; the response then carries ``x-servegate-cold-start-ms``. Where it loads, and
  which idle model it unloads first when every slot is taken, is decided by the pure
  :func:`router.residency.place_load`. A failed load answers the held calls with 503 and the
  reason; calls in the next ``retry_backoff_s`` (doubling per failure, at most
  ``max_retry_backoff_s``) are answered at once, and the first call after it tries again;
- :meth:`Residency.run` (a background task) reads every endpoint's repository index
  (``POST /v2/repository/index``) every ``index_interval_s``, publishes this gateway's demand,
  and, on the one gateway that holds the pool's leader lock, applies
  :func:`router.residency.plan`: unload models idle past the grace, add or take back replicas.

Every time here is wall-clock seconds (``time.time``), so gateways compare last-use times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from contracts.config import ResidencyConfig
from gateway.adapters.residency_store import Demand, MemoryResidencyStore, ResidencyStore
from gateway.adapters.upstream import Upstream, UpstreamResponse
from gateway.errors import StateStoreError, Unavailable, UpstreamError, UpstreamStatus
from gateway.pipeline.coldstart import ColdStart, ColdWait
from gateway.pipeline.pools import Endpoint, Pool
from gateway.pipeline.runtime import Runtime
from router.residency import FleetView, Load, NoRoom, Unload, place_load, plan

log = logging.getLogger("servegate.residency")

_RATE_EWMA = 0.5  # weight of the latest tick in a model's request rate
_FOLLOW_POLL_S = 0.2  # another gateway loads the model: how often its index is read
_NO_ROOM_POLL_S = 0.2  # every slot is busy: how often placement is tried again


class LoadFailed(Exception):
    """A load that did not happen (Triton's answer, a transport error, no room)."""


@dataclass
class _Failure:
    count: int
    until: float
    message: str


class Residency:
    def __init__(self, runtime: Runtime, upstream: Upstream, coldstart: ColdStart,
                 registry: CollectorRegistry, in_flight: Callable[[], dict[str, int]],
                 store: ResidencyStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.coldstart = coldstart
        self.store: ResidencyStore = store or MemoryResidencyStore()
        self._in_flight = in_flight
        self._clock = clock
        # pool -> endpoint address -> {model: resident since}; loads in progress apart
        self._held: dict[str, dict[str, dict[str, float]]] = {}
        self._loading: dict[str, dict[str, set[str]]] = {}
        self._unloaded: dict[tuple[str, str, str], float] = {}  # (pool, address, model) -> t
        self._last_used: dict[str, dict[str, float]] = {}  # pool -> model -> t (this gateway)
        self._calls: dict[str, dict[str, int]] = {}  # pool -> model -> calls since last tick
        self._rate: dict[str, dict[str, float]] = {}  # pool -> model -> requests/s
        self._loads: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._replica_loads: set[asyncio.Task[None]] = set()
        self._failures: dict[tuple[str, str], _Failure] = {}
        self._indexed_at: dict[str, float] = {}
        # One index read per pool at a time, so an older answer never lands after a newer one.
        self._refreshing: dict[str, asyncio.Lock] = {}
        self._ticked_at: dict[str, float] = {}
        self.metrics = ResidencyMetrics(registry, self)

    # ------------------------------------------------------------------ request path

    def holding(self, pool: Pool, model: str, endpoints: Sequence[Endpoint],
                cold: ColdWait | None) -> list[Endpoint]:
        """The endpoints of ``endpoints`` that hold ``model``; records the call's demand (a
        readiness check is no demand: polling it must not keep a model loaded)."""
        name = pool.name
        if cold is None or cold.load:
            now = self._clock()
            used = self._last_used.get(name)
            if used is None:
                used = self._last_used[name] = {}
                self._calls[name] = {}
            calls = self._calls[name]
            used[model] = now  # again after a wait: used right after its load is not idle
            if cold is None or not cold.waited_s:  # counted once, not again after its wait
                calls[model] = calls.get(model, 0) + 1
        held = self._held.get(name)
        if not held:
            return []
        found = [e for e in endpoints if model in held.get(e.address, ())]
        if found and (cold is None or not cold.waited_s):
            self.metrics.hit(name)
        return found

    async def wait_loaded(self, pool: Pool, model: str, cold: ColdWait) -> float:
        """Start (or join) the load of ``model`` and hold the call until it is READY; the
        seconds waited. :class:`Unavailable` while a failed load backs off, and from the
        cold-start buffer (queue full, deadline, load failed)."""
        key = (pool.name, model)
        cfg = pool.config.residency
        now = self._clock()
        failure = self._failures.get(key)
        if key not in self._loads:
            if failure is not None and failure.until > now:
                retry = max(1, math.ceil(failure.until - now))
                raise Unavailable(f"{failure.message}; next attempt in {retry}s", retry)
            self.metrics.miss(pool.name)
            self._loads[key] = asyncio.create_task(self._load(pool.name, model),
                                                   name=f"load:{pool.name}:{model}")
        budget = cold.budget_s()
        if budget is not None:
            budget -= cold.waited_s
        return await self.coldstart.wait_for_model(pool.name, model, cfg, budget)

    # ------------------------------------------------------------------ loading

    async def _load(self, pool_name: str, model: str) -> None:
        key = (pool_name, model)
        started = self._clock()
        try:
            pool = self.runtime.state.pools.get(pool_name)
            if pool is None or not pool.config.managed:
                raise LoadFailed(f"pool '{pool_name}' is no longer model-managed")
            cfg = pool.config.residency
            deadline = started + cfg.load_timeout_s
            if await self._lock(f"mload:{pool_name}:{model}", cfg.load_timeout_s):
                try:
                    await self.refresh(pool)  # another gateway may have loaded it meanwhile
                    if not self._holders(pool_name, model):
                        await self._place_and_load(pool, model, deadline)
                finally:
                    await self._unlock(f"mload:{pool_name}:{model}")
            else:
                await self._follow(pool, model, deadline)
        except Exception as exc:
            self._failed(pool_name, model, exc)
        else:
            self._failures.pop(key, None)
            self.coldstart.model_ready(pool_name, model)
        finally:
            self._loads.pop(key, None)

    def _failed(self, pool_name: str, model: str, exc: Exception) -> None:
        key = (pool_name, model)
        pool = self.runtime.state.pools.get(pool_name)
        cfg = pool.config.residency if pool is not None else ResidencyConfig()
        previous = self._failures.get(key)
        count = previous.count + 1 if previous is not None else 1
        backoff = min(cfg.retry_backoff_s * 2 ** (count - 1), cfg.max_retry_backoff_s)
        message = f"model '{model}' could not be loaded in pool '{pool_name}': {exc}"
        self._failures[key] = _Failure(count, self._clock() + backoff, message)
        self.metrics.loads.labels(pool_name, "failed").inc()
        log.warning("%s (attempt %d; next attempt no sooner than %.1fs)", message, count,
                    backoff)
        self.coldstart.model_failed(pool_name, model, message, max(1, math.ceil(backoff)))

    async def _place_and_load(self, pool: Pool, model: str, deadline: float) -> None:
        cfg = pool.config.residency
        while True:
            decision = place_load(model, self.view(pool), cfg, self._clock())
            if isinstance(decision, Load):
                break
            if self._clock() + _NO_ROOM_POLL_S > deadline:
                raise LoadFailed(f"no room: {decision.reason}")
            await asyncio.sleep(_NO_ROOM_POLL_S)  # a slot frees when a model goes idle
        ep = self._endpoint(pool, decision.endpoint)
        # The slot is taken now, before any await: a concurrent placement must not take it.
        loading = self._loading.setdefault(pool.name, {}).setdefault(ep.address, set())
        loading.add(model)
        try:
            for victim in decision.evict:
                await self._unload(pool, ep, victim, "evicted")
        except BaseException:
            loading.discard(model)
            raise
        await self.load_on(pool, ep, model, deadline)

    async def load_on(self, pool: Pool, ep: Endpoint, model: str, deadline: float) -> None:
        """``POST /v2/repository/models/{model}/load`` on ``ep``; the model counts as held when
        Triton answers 200. Raises :class:`LoadFailed` otherwise."""
        loading = self._loading.setdefault(pool.name, {}).setdefault(ep.address, set())
        loading.add(model)
        started = self._clock()
        try:
            response = await self.upstream.request(
                ep.host, ep.port, b"POST", f"/v2/repository/models/{model}/load".encode(),
                [(b"content-type", b"application/json")], b"{}",
                pool.config.timeouts.connect_s, max(deadline - started, 0.1))
        except UpstreamError as exc:
            raise LoadFailed(f"endpoint {ep.address}: {exc}") from exc
        finally:
            loading.discard(model)
        if response.status != 200:
            raise LoadFailed(f"endpoint {ep.address} answered {response.status}: "
                             f"{_error_text(response.body)}")
        now = self._clock()
        self._held.setdefault(pool.name, {}).setdefault(ep.address, {})[model] = now
        self._unloaded.pop((pool.name, ep.address, model), None)
        self.metrics.loads.labels(pool.name, "ok").inc()
        self.metrics.load_time.labels(pool.name).observe(now - started)
        log.info("model %s loaded on %s/%s in %.2fs", model, pool.name, ep.address,
                 now - started)

    async def _unload(self, pool: Pool, ep: Endpoint, model: str, reason: str) -> None:
        """Stop routing ``model`` to ``ep`` at once, then ask Triton to unload it (Triton
        lets calls already running on it finish)."""
        held = self._held.get(pool.name, {}).get(ep.address, {})
        if held.pop(model, None) is None:
            return
        self._unloaded[(pool.name, ep.address, model)] = self._clock()
        self.metrics.unloads.labels(pool.name, reason).inc()
        if reason == "evicted":
            self.metrics.evictions.labels(pool.name).inc()
        log.info("unloading model %s from %s/%s (%s)", model, pool.name, ep.address, reason)
        try:
            response = await self.upstream.request(
                ep.host, ep.port, b"POST", f"/v2/repository/models/{model}/unload".encode(),
                [(b"content-type", b"application/json")], b"{}",
                pool.config.timeouts.connect_s, pool.config.residency.load_timeout_s)
        except UpstreamError as exc:
            log.warning("unload of %s on %s failed: %s", model, ep.address, exc)
            return
        if response.status != 200:
            log.warning("unload of %s on %s answered %d: %s", model, ep.address,
                        response.status, _error_text(response.body))

    async def _follow(self, pool: Pool, model: str, deadline: float) -> None:
        """Another gateway is loading ``model``: read the index until an endpoint holds it."""
        while not self._holders(pool.name, model):
            if self._clock() > deadline:
                raise LoadFailed(f"another gateway's load did not finish within "
                                 f"{pool.config.residency.load_timeout_s:g}s")
            await asyncio.sleep(_FOLLOW_POLL_S)
            await self.refresh(pool)

    async def _lock(self, name: str, ttl_s: float) -> bool:
        try:
            return await self.store.try_lock(name, ttl_s)
        except StateStoreError as exc:
            log.warning("%s: loading without the fleet lock", exc)
            return True

    async def _unlock(self, name: str) -> None:
        with contextlib.suppress(StateStoreError):
            await self.store.unlock(name)

    def gone(self, pool: Pool, ep: Endpoint, model: str, outcome: object) -> bool:
        """True when ``outcome`` (a REST response or a gRPC status error) says ``ep`` does not
        have ``model`` (unloaded by another gateway, or an unload racing the call): the call
        never ran, so the proxy sends it again; ``ep`` no longer counts as holding it."""
        if isinstance(outcome, UpstreamResponse):
            if outcome.status != 404 or b"unknown model" not in outcome.body:
                return False
        elif not (isinstance(outcome, UpstreamStatus) and "unknown model" in outcome.details):
            return False
        if self._held.get(pool.name, {}).get(ep.address, {}).pop(model, None) is not None:
            log.warning("model %s was not on %s/%s as the index said; calling again",
                        model, pool.name, ep.address)
        self.metrics.stale.labels(pool.name).inc()
        return True

    # ------------------------------------------------------------------ what endpoints hold

    def _holders(self, pool_name: str, model: str) -> list[str]:
        return [a for a, models in self._held.get(pool_name, {}).items() if model in models]

    @staticmethod
    def _endpoint(pool: Pool, address: str) -> Endpoint:
        for ep in pool.endpoints:
            if ep.address == address:
                return ep
        raise LoadFailed(f"endpoint {address} left pool '{pool.name}'")

    async def refresh(self, pool: Pool) -> None:
        """Read every endpoint's repository index; what is READY there is held. Only the
        models routed to this pool count: one loaded by someone else (another pool sharing the
        servers, an operator) is neither counted against the capacity nor ever unloaded."""
        async with self._refreshing.setdefault(pool.name, asyncio.Lock()):
            await self._refresh(pool)

    async def _refresh(self, pool: Pool) -> None:
        started = self._clock()
        results = await asyncio.gather(*(self._index(pool, ep) for ep in pool.endpoints))
        held = self._held.setdefault(pool.name, {})
        ours = {r.model for r in self.runtime.state.table.routes() if r.pool == pool.name}
        for ep, found in zip(pool.endpoints, results, strict=True):
            if found is None:
                continue  # unreachable: health decides; keep what we knew
            ready = found & ours
            before = held.get(ep.address, {})
            # Unloaded by this gateway: not held, even while Triton still lists it READY (its
            # unload is asynchronous); forgotten once the index no longer lists it.
            unloading = {m for m in ready if (pool.name, ep.address, m) in self._unloaded}
            for (p, a, m) in list(self._unloaded):
                if p == pool.name and a == ep.address and m not in found:
                    del self._unloaded[(p, a, m)]
            now = {m: before.get(m, started) for m in ready - unloading}
            # loaded here after the index was read: keep
            now.update({m: t for m, t in before.items() if t > started})
            held[ep.address] = now
        live = {ep.address for ep in pool.endpoints}
        for address in list(held):
            if address not in live:
                del held[address]
        self._indexed_at[pool.name] = started
        cutoff = started - 600.0  # an unload Triton never finished: trust the index again
        for k, t in list(self._unloaded.items()):
            if t < cutoff:
                del self._unloaded[k]

    async def _index(self, pool: Pool, ep: Endpoint) -> set[str] | None:
        try:
            response = await self.upstream.request(
                ep.host, ep.port, b"POST", b"/v2/repository/index",
                [(b"content-type", b"application/json")], b"{}",
                pool.config.timeouts.connect_s, pool.config.health.probe_timeout_s)
            if response.status != 200:
                return None
            entries = json.loads(response.body)
            return {e["name"] for e in entries
                    if isinstance(e, dict) and e.get("state") == "READY" and "name" in e}
        except (UpstreamError, ValueError, TypeError, KeyError) as exc:
            log.debug("repository index of %s: %s", ep.address, exc)
            return None

    def view(self, pool: Pool, fleet: Sequence[Demand] = ()) -> FleetView:
        """The pure policy's input: admitted endpoints, holdings, this gateway's and the
        fleet's demand (models busy here or anywhere are never evicted)."""
        name = pool.name
        in_flight = self._in_flight()
        last_used = dict(self._last_used.get(name, {}))
        rate = dict(self._rate.get(name, {}))
        busy = {m for m, n in in_flight.items() if n > 0}
        for doc in fleet:
            for model, values in doc.items():
                if not isinstance(values, list) or len(values) < 3:
                    continue
                last_used[model] = max(last_used.get(model, 0.0), float(values[0]))
                rate[model] = rate.get(model, 0.0) + float(values[1])
                if values[2]:
                    busy.add(model)
        # A resident model nobody here has called (loaded before this gateway started, or by
        # another gateway): its idle time counts from when it was first seen resident.
        for models in self._held.get(name, {}).values():
            for model, since in models.items():
                last_used.setdefault(model, since)
        cap = pool.config.capacity
        return FleetView(
            endpoints=tuple(e.address for e in pool.endpoints if e.admitted),
            capacity=cap.models if cap is not None else 1,
            memory=cap.memory_bytes if cap is not None else None,
            sizes=cap.model_sizes if cap is not None else {},
            default_size=(cap.model_bytes or 0.0) if cap is not None else 0.0,
            held={a: dict(m) for a, m in self._held.get(name, {}).items()},
            loading={a: frozenset(m) for a, m in self._loading.get(name, {}).items()},
            last_used=last_used, rate=rate, busy=frozenset(busy))

    def index_state(self, pool_name: str, model: str) -> tuple[str, str]:
        """The repository index entry of a model in a managed pool: READY when at least one
        endpoint holds it, else UNAVAILABLE with "loading" or "not loaded"."""
        if self._holders(pool_name, model):
            return "READY", ""
        if (pool_name, model) in self._loads or any(
                model in m for m in self._loading.get(pool_name, {}).values()):
            return "UNAVAILABLE", "loading"
        failure = self._failures.get((pool_name, model))
        if failure is not None:
            return "UNAVAILABLE", f"not loaded: last load failed: {failure.message}"
        return "UNAVAILABLE", "not loaded"

    def resident(self) -> Iterator[tuple[str, str, int]]:
        for pool, endpoints in self._held.items():
            for address, models in endpoints.items():
                yield pool, address, len(models)

    # ------------------------------------------------------------------ background

    async def run(self, every_s: float = 0.25) -> None:
        """Refresh holdings, publish demand, and lead placement where this gateway leads."""
        while True:
            for pool in list(self.runtime.state.pools.values()):
                if pool.config.managed:
                    try:
                        await self.tick(pool)
                    except Exception:
                        log.exception("residency tick of pool %s failed", pool.name)
            await asyncio.sleep(every_s)

    async def tick(self, pool: Pool) -> None:
        cfg = pool.config.residency
        now = self._clock()
        if now - self._indexed_at.get(pool.name, -math.inf) >= cfg.index_interval_s:
            await self.refresh(pool)
        last = self._ticked_at.get(pool.name)
        if last is not None and now - last < cfg.tick_s:
            return
        self._ticked_at[pool.name] = now
        self._update_rates(pool.name, now - last if last is not None else cfg.tick_s)
        fleet: list[Demand] = []
        try:
            await self.store.publish_demand(pool.name, self._demand(pool.name), 3 * cfg.tick_s)
            if not await self.store.try_lead(f"residency:{pool.name}", 3 * cfg.tick_s):
                return
            fleet = await self.store.fleet_demand(pool.name)
        except StateStoreError as exc:
            log.warning("%s: placement of pool %s decided on this gateway's demand only",
                        exc, pool.name)
        for action in plan(self.view(pool, fleet), cfg, self._clock()):
            await self._apply(pool, action)

    async def _apply(self, pool: Pool, action: Load | Unload) -> None:
        ep = self._endpoint(pool, action.endpoint)
        if isinstance(action, Unload):
            if self._in_flight().get(action.model, 0):
                return  # a call started since the view was taken
            await self._unload(pool, ep, action.model, action.reason)
            return
        key = (pool.name, action.model)
        if key in self._loads:
            return

        async def replica() -> None:
            try:
                await self.load_on(pool, ep, action.model,
                                   self._clock() + pool.config.residency.load_timeout_s)
            except LoadFailed as exc:
                log.warning("extra replica of %s on %s not loaded: %s", action.model,
                            ep.address, exc)

        task = asyncio.create_task(replica(), name=f"replica:{pool.name}:{action.model}")
        self._replica_loads.add(task)
        task.add_done_callback(self._replica_loads.discard)

    def _update_rates(self, pool_name: str, dt: float) -> None:
        calls = self._calls.get(pool_name, {})
        rates = self._rate.setdefault(pool_name, {})
        for model in set(calls) | set(rates):
            latest = calls.get(model, 0) / max(dt, 1e-3)
            rate = _RATE_EWMA * latest + (1 - _RATE_EWMA) * rates.get(model, 0.0)
            if rate < 1e-3 and not calls.get(model):
                rates.pop(model, None)
            else:
                rates[model] = rate
        calls.clear()

    def _demand(self, pool_name: str) -> Demand:
        in_flight = self._in_flight()
        rates = self._rate.get(pool_name, {})
        return {m: [t, rates.get(m, 0.0), float(in_flight.get(m, 0))]
                for m, t in self._last_used.get(pool_name, {}).items()}

    async def aclose(self) -> None:
        tasks = [*self._loads.values(), *self._replica_loads]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.aclose()


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace")
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return body[:200].decode(errors="replace")


class ResidencyMetrics(Collector):
    """Loads, unloads, load time, evictions, hits and misses by pool; resident models per
    endpoint read at scrape time."""

    def __init__(self, registry: CollectorRegistry, residency: Residency) -> None:
        self._residency = residency
        self.loads = Counter("servegate_model_loads", "Model loads issued, by result",
                             ["pool", "result"], registry=registry)
        self.unloads = Counter(
            "servegate_model_unloads",
            "Model unloads, by reason: idle (past the grace), evicted (to make room), spare "
            "(an extra replica no longer needed)", ["pool", "reason"], registry=registry)
        self.evictions = Counter("servegate_model_evictions",
                                 "Models unloaded to make room for another", ["pool"],
                                 registry=registry)
        self.load_time = Histogram(
            "servegate_model_load_duration_seconds", "Time Triton took to load a model",
            ["pool"], buckets=(0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0),
            registry=registry)
        self.hits = Counter("servegate_model_hits",
                            "Calls to a model-managed pool served without a load", ["pool"],
                            registry=registry)
        self.misses = Counter("servegate_model_misses",
                              "Calls to a model-managed pool that started a model load",
                              ["pool"], registry=registry)
        self.stale = Counter(
            "servegate_model_stale_routes",
            "Calls an endpoint answered 'unknown model' though the index said it held the "
            "model (sent again after a fresh look)", ["pool"], registry=registry)
        self._hits: dict[str, Counter] = {}
        registry.register(self)

    def hit(self, pool: str) -> None:
        child = self._hits.get(pool)
        if child is None:
            child = self._hits[pool] = self.hits.labels(pool)
        child.inc()

    def miss(self, pool: str) -> None:
        self.misses.labels(pool).inc()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("servegate_resident_models",
                                  "Models loaded on each endpoint of a model-managed pool",
                                  labels=["pool", "endpoint"])
        for pool, address, count in self._residency.resident():
            gauge.add_metric([pool, address], count)
        yield gauge

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("servegate_resident_models", "", labels=["pool", "endpoint"])


__all__ = ["LoadFailed", "NoRoom", "Residency", "ResidencyMetrics"]
