"""Shared state of model-managed pools: one load per model across gateways, fleet demand.

Where it sits: behind :class:`gateway.pipeline.residency.Residency`, off the request path (it is
called when a model must be loaded and on the residency tick). Without Redis,
:class:`MemoryResidencyStore`: this process is the fleet (its locks always succeed, it always
leads). With ``redis_url``, :class:`RedisResidencyStore`:

- ``mload:<pool>:<model>`` (string, ``SET NX PX``): the gateway holding it issues the load;
  the others follow its progress through the endpoints' repository index;
- ``leader:residency:<pool>`` (string with PX expiry, as the rollout leader lock): the one
  gateway that unloads idle models and adds or removes replicas;
- ``mdemand:<pool>:<replica>`` (string with expiry): JSON ``{model: [last_used, rate,
  busy]}`` of one gateway, so the leader decides on the whole fleet's demand.

Redis errors become :class:`gateway.errors.StateStoreError`; the caller decides locally.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from adapters.redisio import close, connect
from gateway.adapters.state import store_errors
from gateway.errors import StateStoreError

log = logging.getLogger("servegate.residency")

Demand = dict[str, list[float]]  # model -> [last_used (wall clock), requests/s, calls in flight]


class ResidencyStore(Protocol):
    async def try_lock(self, name: str, ttl_s: float) -> bool: ...
    async def unlock(self, name: str) -> None: ...
    async def try_lead(self, name: str, ttl_s: float) -> bool: ...
    async def publish_demand(self, pool: str, demand: Demand, ttl_s: float) -> None: ...
    async def fleet_demand(self, pool: str) -> list[Demand]: ...
    async def aclose(self) -> None: ...


class MemoryResidencyStore:
    """One process: the in-process single flight is the only lock; this process leads."""

    async def try_lock(self, name: str, ttl_s: float) -> bool:
        return True

    async def unlock(self, name: str) -> None:
        return None

    async def try_lead(self, name: str, ttl_s: float) -> bool:
        return True

    async def publish_demand(self, pool: str, demand: Demand, ttl_s: float) -> None:
        return None

    async def fleet_demand(self, pool: str) -> list[Demand]:
        return []

    async def aclose(self) -> None:
        return None


_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) else return 0 end")


class RedisResidencyStore:
    def __init__(self, url: str, replica_id: str, prefix: str = "servegate:",
                 socket_timeout_s: float = 1.0) -> None:
        self._redis = connect(url, timeout_s=socket_timeout_s, decode=True)
        self.replica_id = replica_id
        self.prefix = prefix

    def _k(self, name: str) -> str:
        return self.prefix + name

    async def try_lock(self, name: str, ttl_s: float) -> bool:
        with store_errors("load lock"):
            return bool(await self._redis.set(self._k(name), self.replica_id, nx=True,
                                              px=int(ttl_s * 1000)))

    async def unlock(self, name: str) -> None:
        with store_errors("load unlock"):
            await self._redis.eval(_RELEASE, 1, self._k(name), self.replica_id)

    async def try_lead(self, name: str, ttl_s: float) -> bool:
        key, ttl_ms = self._k(f"leader:{name}"), int(ttl_s * 1000)
        with store_errors("leader lock"):
            if await self._redis.set(key, self.replica_id, nx=True, px=ttl_ms):
                return True
            return bool(await self._redis.eval(_RENEW, 1, key, self.replica_id, ttl_ms))

    async def publish_demand(self, pool: str, demand: Demand, ttl_s: float) -> None:
        with store_errors("publish demand"):
            await self._redis.set(self._k(f"mdemand:{pool}:{self.replica_id}"),
                                  json.dumps(demand), px=int(ttl_s * 1000))

    async def fleet_demand(self, pool: str) -> list[Demand]:
        with store_errors("fleet demand"):
            keys = [k async for k in self._redis.scan_iter(match=self._k(f"mdemand:{pool}:*"))]
            values = await self._redis.mget(keys) if keys else []
        out: list[Demand] = []
        for value in values:
            if not value:
                continue
            try:
                doc: Any = json.loads(value)
            except ValueError:
                log.warning("ignoring unreadable model demand in redis: %.80r", value)
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    async def aclose(self) -> None:
        await close(self._redis)


__all__ = ["Demand", "MemoryResidencyStore", "RedisResidencyStore", "ResidencyStore",
           "StateStoreError"]
