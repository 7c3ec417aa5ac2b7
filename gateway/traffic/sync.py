"""The traffic manager's background jobs: follow the shared store, resync, drive rollouts.

Where it sits: one task of the gateway's task group (:meth:`TrafficSync.run`), beside the
prober and discovery. It applies announcements from other replicas at once, reloads the whole
shared state every ``resync_s`` (so a missed announcement or a Redis restart heals), and every
``tick_s`` publishes this replica's variant counters and, when it holds the leader lock,
advances running rollouts (:meth:`TrafficManager.drive_once`). A store outage is logged once
(:class:`adapters.outage.Outage`) and the last known weights keep serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.errors import StateStoreError
from gateway.traffic.manager import TrafficManager


class TrafficSync:
    def __init__(self, manager: TrafficManager) -> None:
        self.manager = manager
        self.store = manager.store
        self.outage = manager.outage

    async def run(self) -> None:
        """Keep state in sync (announcements + periodic resync) and drive rollouts."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow())
            tg.create_task(self._every(self.manager.resync_s, self.manager.resync))
            tg.create_task(self._every(self.manager.tick_s, self.manager.drive_once))

    async def _follow(self) -> None:
        while True:
            try:
                async for _ in self.store.changes():
                    await self.manager.resync()
            except StateStoreError as exc:
                self.outage.failed(exc, "serving with the last known weights")
                await asyncio.sleep(self.manager.resync_s)

    async def _every(self, period: float, job: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await job()
            except StateStoreError as exc:
                self.outage.failed(exc, "serving with the last known weights")
            else:
                self.outage.ok()
