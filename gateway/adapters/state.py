"""Shared traffic state: split weights, rollouts and per-variant statistics across replicas.

Where it sits: behind :class:`gateway.traffic.manager.TrafficManager`. Without Redis,
:class:`MemoryStore` keeps everything in the process. With ``redis_url``,
:class:`RedisStore` keeps weights and rollouts in Redis hashes, announces every change on a
pub/sub channel (replicas apply it at once and also resync periodically), lets one replica
lead rollouts with an expiring lock, and collects each replica's variant statistics under a
TTL so the leader judges the whole fleet. Redis errors become :class:`StateStoreError`; the
manager keeps serving with the last state it knew.

Redis outages: nothing on the request path touches the store, so serving goes on. A change
saved while Redis is unreachable is applied by the caller at once and kept here as pending;
the next successful :meth:`RedisStore.load` (the manager resyncs every second) writes and
announces it first, so replicas converge on it. Redis restarted empty (no ``epoch`` key) is
re-seeded from the state this replica last knew (``HSETNX``: the first replica back wins, the
others then read it) instead of every replica falling back to the config's weights.

Keys (``prefix`` defaults to ``servegate:``): ``weights`` and ``rollouts`` (hash: model ->
JSON), ``events`` (channel), ``epoch`` (string: set once per Redis lifetime; its absence means
Redis lost the state), ``leader:<name>`` (string with PX expiry), ``vstats:<replica>``
(string with expiry: JSON of that replica's cumulative variant counters).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.errors import RedisFailed
from adapters.redisio import close, connect, redis_errors, subscribe
from gateway.errors import StateStoreError

log = logging.getLogger("servegate.state")

Doc = dict[str, Any]


@dataclass
class Snapshot:
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    rollouts: dict[str, Doc] = field(default_factory=dict)


class StateStore(Protocol):
    async def load(self) -> Snapshot: ...
    async def save_weights(self, model: str, weights: dict[str, float] | None) -> None: ...
    async def save_rollout(self, model: str, doc: Doc | None) -> None: ...
    def changes(self) -> AsyncIterator[None]: ...
    async def try_lead(self, name: str, ttl_s: float) -> bool: ...
    async def publish_stats(self, doc: Doc, ttl_s: float) -> None: ...
    async def fleet_stats(self) -> list[Doc]: ...
    async def aclose(self) -> None: ...


class MemoryStore:
    """One process: state lives here; this replica always leads."""

    def __init__(self) -> None:
        self._snapshot = Snapshot()
        self._stats: Doc = {}

    async def load(self) -> Snapshot:
        return Snapshot(dict(self._snapshot.weights), dict(self._snapshot.rollouts))

    async def save_weights(self, model: str, weights: dict[str, float] | None) -> None:
        _put(self._snapshot.weights, model, weights)

    async def save_rollout(self, model: str, doc: Doc | None) -> None:
        _put(self._snapshot.rollouts, model, doc)

    async def changes(self) -> AsyncIterator[None]:
        await asyncio.Event().wait()  # nobody else changes in-process state
        yield

    async def try_lead(self, name: str, ttl_s: float) -> bool:
        return True

    async def publish_stats(self, doc: Doc, ttl_s: float) -> None:
        self._stats = doc

    async def fleet_stats(self) -> list[Doc]:
        return [self._stats] if self._stats else []

    async def aclose(self) -> None:
        return None


_GONE = object()


def _parsed(key: str, raw: dict[Any, Any]) -> dict[str, Any]:
    """JSON values of a hash; one that does not parse is skipped, not fatal to the resync."""
    out: dict[str, Any] = {}
    for model, value in raw.items():
        try:
            out[str(model)] = json.loads(value)
        except ValueError:
            log.warning("ignoring the unreadable %s of %s in redis: %.80r", key, model, value)
    return out


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        target.pop(key, None)
    else:
        target[key] = value


@contextlib.contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Redis failures (translated by :mod:`adapters.redisio`) as this package's error."""
    try:
        with redis_errors(what):
            yield
    except RedisFailed as exc:
        raise StateStoreError(str(exc)) from exc


class RedisStore:
    def __init__(self, url: str, replica_id: str, prefix: str = "servegate:",
                 socket_timeout_s: float = 1.0) -> None:
        self._redis = connect(url, timeout_s=socket_timeout_s, decode=True)
        self.replica_id = replica_id
        self.prefix = prefix
        self._known = Snapshot()  # the state this replica last read or wrote
        self._pending: dict[tuple[str, str], Any] = {}  # (hash, model) -> value; None deletes
        self._reachable = True

    def _k(self, name: str) -> str:
        return self.prefix + name

    @property
    def pending(self) -> int:
        """Changes saved while Redis was unreachable and not written yet."""
        return len(self._pending)

    async def load(self) -> Snapshot:
        """Redis's state, after re-seeding an emptied Redis and writing pending changes."""
        try:
            with store_errors("load"):
                await self._reconcile()
                weights = await self._redis.hgetall(self._k("weights"))
                rollouts = await self._redis.hgetall(self._k("rollouts"))
        except StateStoreError:
            self._reachable = False
            raise
        self._reachable = True
        self._known = Snapshot(_parsed("weights", weights), _parsed("rollouts", rollouts))
        return Snapshot(dict(self._known.weights), dict(self._known.rollouts))

    async def _reconcile(self) -> None:
        if not await self._redis.exists(self._k("epoch")):
            await self._seed()
        for item, value in list(self._pending.items()):
            if self._pending.get(item, _GONE) is not value:
                continue  # changed meanwhile: the newer value is written instead
            del self._pending[item]
            try:
                await self._write(*item, value)
            except BaseException:
                self._pending.setdefault(item, value)
                raise
            log.info("wrote the %s of %s changed while redis was unreachable", *item)

    async def _seed(self) -> None:
        """Redis has no state of ours (new, or restarted empty): put back what we know."""
        known = self._known
        async with self._redis.pipeline(transaction=True) as pipe:
            for model, weights in known.weights.items():
                pipe.hsetnx(self._k("weights"), model, json.dumps(weights))
            for model, doc in known.rollouts.items():
                pipe.hsetnx(self._k("rollouts"), model, json.dumps(doc))
            pipe.set(self._k("epoch"), uuid.uuid4().hex, nx=True)
            await pipe.execute()
        if known.weights or known.rollouts:
            log.warning("redis had lost the shared state (restarted empty?): re-seeded it with "
                        "this replica's %d weights and %d rollouts", len(known.weights),
                        len(known.rollouts))
            await self._redis.publish(self._k("events"), f"seed::{self.replica_id}")

    async def _write(self, key: str, model: str, value: Any) -> None:
        if value is None:
            await self._redis.hdel(self._k(key), model)
        else:
            await self._redis.hset(self._k(key), model, json.dumps(value))
        await self._redis.publish(self._k("events"), f"{key}:{model}:{self.replica_id}")

    async def _save(self, key: str, model: str, value: Any) -> None:
        """Write and announce; while Redis is unreachable, keep it pending (no error)."""
        _put(self._known.weights if key == "weights" else self._known.rollouts, model, value)
        if self._reachable:
            self._pending.pop((key, model), None)
            try:
                with store_errors(f"save {key}"):
                    await self._write(key, model, value)
                return
            except StateStoreError as exc:
                self._reachable = False
                log.warning("%s; the new %s of %s is applied here and will be written when "
                            "redis is back", exc, key, model)
        else:
            log.warning("redis unreachable: the new %s of %s is applied here and will be "
                        "written when redis is back", key, model)
        self._pending[(key, model)] = value

    async def save_weights(self, model: str, weights: dict[str, float] | None) -> None:
        await self._save("weights", model, weights)

    async def save_rollout(self, model: str, doc: Doc | None) -> None:
        await self._save("rollouts", model, doc)

    async def changes(self) -> AsyncIterator[None]:
        """Yields once per change announced by any replica; raises StateStoreError on loss."""
        try:
            async for _ in subscribe(self._redis, self._k("events")):
                yield None
        except RedisFailed as exc:
            raise StateStoreError(str(exc)) from exc

    async def try_lead(self, name: str, ttl_s: float) -> bool:
        """Take or renew the expiring leader lock ``name``; True while this replica holds it."""
        key, ttl_ms = self._k(f"leader:{name}"), int(ttl_s * 1000)
        with store_errors("leader lock"):
            if await self._redis.set(key, self.replica_id, nx=True, px=ttl_ms):
                return True
            # Renew only our own lock (compare-and-expire in one script).
            renewed = await self._redis.eval(
                "if redis.call('get', KEYS[1]) == ARGV[1] then "
                "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end",
                1, key, self.replica_id, ttl_ms)
        return bool(renewed)

    async def publish_stats(self, doc: Doc, ttl_s: float) -> None:
        with store_errors("publish stats"):
            await self._redis.set(self._k(f"vstats:{self.replica_id}"), json.dumps(doc),
                                  px=int(ttl_s * 1000))

    async def fleet_stats(self) -> list[Doc]:
        with store_errors("fleet stats"):
            keys = [k async for k in self._redis.scan_iter(match=self._k("vstats:*"))]
            values = await self._redis.mget(keys) if keys else []
        return [json.loads(v) for v in values if v]

    async def aclose(self) -> None:
        await close(self._redis)
