"""Rate-limited logging of a dependency's outage (Redis, the autoscaler), one per user.

Where it sits: beside the background tasks that talk to Redis (shared state resync and
pub/sub in :mod:`gateway.traffic.manager` and :mod:`gateway.adapters.state`, the counter publisher,
activation). None of them is on a request's path, and while their dependency is down they fail on
every tick; logging each failure would print a line a second per task. An :class:`Outage` logs the
first failure as a warning, then at most one summary every ``every_s`` (how many failures,
since when), and one line when the dependency answers again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Outage:
    def __init__(self, log: logging.Logger, what: str, every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.what = what
        self.every_s = every_s
        self._clock = clock
        self.since: float | None = None  # when the current outage began; None while healthy
        self.failures = 0
        self._logged_at = 0.0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, consequence: str = "") -> None:
        """One more failure; logged only if it is the first or ``every_s`` have passed."""
        now = self._clock()
        self.failures += 1
        suffix = f"; {consequence}" if consequence else ""
        if self.since is None:
            self.since, self._logged_at = now, now
            self.log.warning("%s unavailable: %s%s", self.what, exc, suffix)
        elif now - self._logged_at >= self.every_s:
            self._logged_at = now
            self.log.warning("%s still unavailable after %.0fs (%d failures): %s%s", self.what,
                             now - self.since, self.failures, exc, suffix)

    def ok(self) -> None:
        """The dependency answered: end the outage (logged once) if there was one."""
        if self.since is None:
            return
        self.log.info("%s is back after %.1fs (%d failures)", self.what,
                      self._clock() - self.since, self.failures)
        self.since, self.failures = None, 0
