"""The owner of the gateway's background jobs: each runs in one task group, and one that crashes
is logged, counted, turns readiness off and is started again after a backoff.

Where it sits: ``gateway.server.serve`` hands it the long-running jobs (probes, discovery,
traffic sync, quota sync, counter publishing, the cost tick, model residency, the endpoint
sweep, the config watcher) and runs :meth:`Supervisor.run` beside the servers; cancelling it
stops every job. No job is lost silently: a job that raises is logged with its traceback and
restarted (after ``backoff_s``, doubling up to ``max_backoff_s`` while it keeps failing within
a minute), and while any job is down :attr:`Supervisor.healthy` is false, which the readiness
probe reports. A job that returns had nothing (more) to do (e.g. quota sync without Redis).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("servegate.jobs")

Job = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class _State:
    restarts: int = 0
    down_since: float | None = None
    backoff_s: float = 0.0
    last_start: float = field(default=0.0)


class Supervisor:
    def __init__(self, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self.state: dict[str, _State] = {}

    def add(self, name: str, job: Job) -> None:
        """A job (a coroutine function meant to run until cancelled), before :meth:`run`."""
        self._jobs[name] = job
        self.state[name] = _State()

    @property
    def healthy(self) -> bool:
        return all(s.down_since is None for s in self.state.values())

    def down(self) -> list[str]:
        return sorted(n for n, s in self.state.items() if s.down_since is not None)

    async def run(self) -> None:
        """Run every job until cancelled; cancelling this cancels them all."""
        async with asyncio.TaskGroup() as tg:
            for name, job in self._jobs.items():
                tg.create_task(self._keep(name, job), name=name)

    async def _keep(self, name: str, job: Job) -> None:
        state = self.state[name]
        while True:
            state.last_start = self._clock()
            try:
                await job()
                log.debug("background job %s has nothing (more) to do", name)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background job %s crashed; readiness is off until it runs "
                              "again", name)
            state.restarts += 1
            state.down_since = self._clock()
            ran_s = state.down_since - state.last_start
            state.backoff_s = (self.backoff_s if ran_s > 60.0 or not state.backoff_s
                               else min(state.backoff_s * 2, self.max_backoff_s))
            await asyncio.sleep(state.backoff_s)
            state.down_since = None
