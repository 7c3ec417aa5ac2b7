"""Leader election on a ``coordination.k8s.io/v1`` Lease (client-go's algorithm, small).

Where it sits: next to the Kubernetes actuator. Several autoscaler replicas may run (a
Deployment with 2 for availability); each runs :meth:`LeaderElector.run`, and the control
loop asks :meth:`LeaderElector.is_leader` before it acts. Followers stay hot: they collect
and decide every tick, so a takeover acts on warm windows at once.

- **acquire**: no Lease -> ``POST`` one naming us (a 409 means another replica won);
- **renew**: the holder patches ``spec.renewTime`` every ``renew_every_s``;
- **expire / take over**: a follower takes the Lease over when its record (holder, renew
  time) has not changed for ``duration_s`` *by the follower's own clock* (so clock skew
  between nodes does not matter; a follower that just started waits one full duration);
- **step down**: a leader that could not renew within ``renew_deadline_s`` stops acting
  before its lease can expire for the others;
- **release**: on a clean shutdown the leader clears ``holderIdentity`` so a follower takes
  over on its next try instead of waiting out the duration.

Writes are ``merge-patch`` with ``metadata.resourceVersion`` as a precondition when the Lease
had one (the API server answers 409 if it changed since we read it: lost race, follower).

Minimal RBAC: ``coordination.k8s.io`` ``leases``: ``get``, ``create``, ``patch`` (see
:mod:`autoscaler.actuators.kubernetes` for the whole Role).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from adapters.kube import KubeClient
from autoscaler.errors import KubernetesConflict, KubernetesError, KubernetesNotFound

log = logging.getLogger(__name__)


class _Ticker(Protocol):
    async def wait(self, seconds: float, wake: asyncio.Event) -> None: ...


def micro_time(t: float) -> str:
    """Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str = "servegate-autoscaler"
    duration_s: int = 15  # leaseDurationSeconds (an integer in the API)
    renew_every_s: float = 2.0  # the leader's renew period and a follower's retry period
    renew_deadline_s: float = 10.0  # a leader that could not renew for this long steps down


class LeaderElector:
    def __init__(self, client: KubeClient, settings: LeaseSettings, identity: str,
                 clock: Callable[[], float]) -> None:
        self.client = client
        self.settings = settings
        self.identity = identity
        self.clock = clock
        self._renewed_at: float | None = None  # our last successful write as holder
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self.holder: str = ""
        self.transitions = 0

    @property
    def path(self) -> str:
        s = self.settings
        return f"/apis/coordination.k8s.io/v1/namespaces/{s.namespace}/leases/{s.name}"

    def is_leader(self, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        return (self._renewed_at is not None
                and now - self._renewed_at < self.settings.renew_deadline_s)

    def _spec(self, now: float, transitions: int, acquire: bool) -> dict[str, Any]:
        spec: dict[str, Any] = {"holderIdentity": self.identity,
                                "leaseDurationSeconds": self.settings.duration_s,
                                "renewTime": micro_time(now), "leaseTransitions": transitions}
        if acquire:
            spec["acquireTime"] = micro_time(now)
        return spec

    async def try_once(self) -> bool:
        """One acquire-or-renew attempt; returns whether we hold the lease now."""
        now = self.clock()
        try:
            lease = await self.client.get(self.path)
        except KubernetesNotFound:
            return await self._create(now)
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        self.holder = holder
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            return await self._write(lease, now, transitions, acquire=False)
        duration = float(spec.get("leaseDurationSeconds") or self.settings.duration_s)
        if holder and now - self._observed_at < duration:
            self._renewed_at = None
            return False
        log.info("lease %s: taking over from %r", self.settings.name, holder or "nobody")
        return await self._write(lease, now, transitions + 1, acquire=True)

    async def _create(self, now: float) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
                "spec": self._spec(now, 0, acquire=True)}
        try:
            await self.client.create(self.path.rsplit("/", 1)[0], body)
        except KubernetesConflict:
            return False  # created by another replica in between
        return self._won(now)

    async def _write(self, lease: dict[str, Any], now: float, transitions: int,
                     acquire: bool) -> bool:
        patch: dict[str, Any] = {"spec": self._spec(now, transitions, acquire)}
        version = (lease.get("metadata") or {}).get("resourceVersion")
        if version:
            patch["metadata"] = {"resourceVersion": version}
        try:
            await self.client.merge_patch(self.path, patch)
        except KubernetesConflict:
            self._renewed_at = None
            return False
        return self._won(now)

    def _won(self, now: float) -> bool:
        if self._renewed_at is None:
            log.info("lease %s: %s is the leader", self.settings.name, self.identity)
            self.transitions += 1
        self._renewed_at = now
        self.holder = self.identity
        self._observed = None
        return True

    async def release(self) -> None:
        """Give the lease up (clean shutdown) so a follower need not wait it out."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            await self.client.merge_patch(self.path, {"spec": {
                "holderIdentity": None, "renewTime": micro_time(self.clock()),
                "leaseDurationSeconds": 1}})
        except KubernetesError as exc:
            log.warning("lease %s: release failed: %s", self.settings.name, exc)

    async def run(self, ticker: _Ticker, release_on_exit: bool = True) -> None:
        """Acquire or renew every ``renew_every_s`` until cancelled; release on the way out."""
        never = asyncio.Event()
        try:
            while True:
                try:
                    await self.try_once()
                except KubernetesError as exc:
                    log.warning("lease %s: %s", self.settings.name, exc)
                await ticker.wait(self.settings.renew_every_s, never)
        finally:
            if release_on_exit:
                await asyncio.shield(self.release())
