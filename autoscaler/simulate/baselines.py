"""The policies servegate is measured against: HPA-like, Knative-KPA-like, and an oracle.

Where it sits: each is a :class:`~autoscaler.simulate.model.SimPolicy` the simulator runs on
the same trace as servegate's. The baselines follow the upstream defaults (shared
REFERENCE.md §7, §8) and the upstream code paths they summarise; none is tuned for the traces.

Both baselines scale on in-flight requests per replica (what a Triton pool under Knative
reports, and a common HPA custom metric), with Knative's default target: 70% of the
replica's concurrency (``containerConcurrency`` = instances x max batch).

HPA (``pkg/controller/podautoscaler``): every 15 s, ``ceil(current x metric/target)`` over
the ready pods; pods still starting count as 0 when scaling up; no change within 10%
tolerance. Scale-up at most max(4 pods, 100%) per 15 s, scale-down 100% per 15 s after a 300 s
stabilization window (highest recommendation). minReplicas 1 (HPA cannot scale to zero).

KPA (``pkg/autoscaler/scaling/autoscaler.go`` and ``kpa/scaler.go``): every 2 s,
``ceil(avg concurrency / target)`` over a 60 s stable and a 6 s panic window; panic when the
panic window wants 2x the ready pods, never scales down while panicking and leaves after 60 s
without; at most 1000x up and 2x down per tick. Scale to zero: the revision must have been
active a full stable window, the decider must want 0 (a stable window with no traffic), and
then the last pod goes after the 30 s grace period. From zero the activator's first request
wakes the autoscaler at once, and the requests it buffers count as concurrency.

Oracle: knows every future second's arrivals and has the same startup delay. It wants
``ceil(arrivals / per-replica target)`` replicas each second (the same per-replica rate
target as servegate's spec, so the ratio of costs measures what not knowing the future costs),
starts them ``startup_s`` ahead and keeps a replica through any gap shorter than a startup.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from autoscaler.policy.spec import NoData
from autoscaler.policy.window import Window
from autoscaler.simulate.model import IntArray, LatencyView, SecondStats
from autoscaler.simulate.profile import PoolProfile

TARGET_UTILIZATION = 0.70  # Knative container-concurrency-target-percentage


class HpaLike:
    name = "hpa"
    interval_s = 15.0
    wakes_on_arrival = False
    tolerance = 0.1
    min_replicas = 1
    stabilization_down_s = 300.0
    period_s = 15.0

    def __init__(self, profile: PoolProfile) -> None:
        self.target = TARGET_UTILIZATION * profile.max_rate
        self.max_replicas = profile.max_replicas
        self.metric = 0.0
        self.recommendations: deque[tuple[float, int]] = deque()
        self.ups: deque[tuple[float, int]] = deque()
        self.downs: deque[tuple[float, int]] = deque()

    def observe(self, stats: SecondStats) -> None:
        self.metric = stats.arrivals

    def metric_desired(self, ready: int, current: int) -> int:
        """``replica_calculator.go``: usage ratio over ready pods, unready pods as 0 on scale-up."""
        if ready == 0:
            return current  # no metrics from any ready pod: no change
        ratio = self.metric / ready / self.target
        unready = current - ready
        if unready <= 0 or ratio <= 1.0:
            if abs(ratio - 1.0) <= self.tolerance:
                return current
            return math.ceil(ratio * ready - 1e-9)
        new_ratio = self.metric / current / self.target
        if abs(new_ratio - 1.0) <= self.tolerance or new_ratio < 1.0:
            return current
        return math.ceil(new_ratio * current - 1e-9)

    def decide(self, now: float, ready: int, current: int, latency: LatencyView) -> int:
        rec = self.metric_desired(ready, current)
        self.recommendations.append((now, rec))
        while self.recommendations[0][0] <= now - self.stabilization_down_s:
            self.recommendations.popleft()
        # stabilizeRecommendationWithBehaviors: up window 0 s, down window 300 s (max)
        stabilized = max(current, rec)
        stabilized = min(stabilized, max(r for _, r in self.recommendations))
        desired = self._rate_limited(now, current, stabilized)
        self._record(now, current, desired)
        return desired

    def _change(self, events: deque[tuple[float, int]], now: float) -> int:
        while events and events[0][0] <= now - self.period_s:
            events.popleft()
        return sum(n for _, n in events)

    def _rate_limited(self, now: float, current: int, desired: int) -> int:
        start = current - self._change(self.ups, now) + self._change(self.downs, now)
        if desired > current:
            limit = max(start + 4, math.ceil(start * 2.0))  # Pods 4, Percent 100; Max
            limit = min(max(limit, current), self.max_replicas)
            return min(desired, limit)
        if desired < current:
            limit = min(math.floor(start * 0.0), current)  # Percent 100
            return max(desired, limit, self.min_replicas)
        return max(min(desired, self.max_replicas), self.min_replicas)

    def _record(self, now: float, current: int, desired: int) -> None:
        if desired > current:
            self.ups.append((now, desired - current))
        elif desired < current:
            self.downs.append((now, current - desired))


class KpaLike:
    name = "kpa"
    interval_s = 2.0
    wakes_on_arrival = True
    stable_window_s = 60.0
    panic_window_s = 6.0  # 10% of the stable window
    panic_threshold = 2.0  # 200%
    max_scale_up_rate = 1000.0
    max_scale_down_rate = 2.0
    grace_s = 30.0

    def __init__(self, profile: PoolProfile) -> None:
        self.target = TARGET_UTILIZATION * profile.concurrency
        self.max_replicas = profile.max_replicas
        self.window = Window(self.stable_window_s)
        self.panic_time: float | None = None
        self.max_panic_pods = 0
        self.active_since: float | None = 0.0
        self.inactive_since: float | None = None

    def observe(self, stats: SecondStats) -> None:
        # the scraper (pods) or the activator (at zero) reports concurrency every second
        self.window.record(stats.t, stats.concurrency)

    def scale(self, now: float, ready: int) -> int | None:
        """``autoscaler.go`` ``Scale``: None when there is no data (ScaleValid=false)."""
        stable = self.window.average(now, self.stable_window_s)
        panic = self.window.average(now, self.panic_window_s)
        if isinstance(stable, NoData) or isinstance(panic, NoData):
            return None
        ready_f = max(1.0, float(ready))
        max_up = math.ceil(self.max_scale_up_rate * ready_f)
        max_down = math.floor(ready_f / self.max_scale_down_rate)
        dspc = math.ceil(stable / self.target - 1e-9)
        dppc = math.ceil(panic / self.target - 1e-9)
        desired_stable = min(max(dspc, max_down), max_up)
        desired_panic = min(max(dppc, max_down), max_up)
        over = dppc / ready_f >= self.panic_threshold
        if over:
            self.panic_time = now
        elif self.panic_time is not None and self.panic_time + self.stable_window_s < now:
            self.panic_time, self.max_panic_pods = None, 0
        desired = desired_stable
        if self.panic_time is not None:
            desired = max(desired, desired_panic)
            self.max_panic_pods = max(self.max_panic_pods, desired)
            desired = self.max_panic_pods
        return desired

    def decide(self, now: float, ready: int, current: int, latency: LatencyView) -> int:
        if ready > 0 and self.active_since is None:
            self.active_since = now
        want = self.scale(now, ready)
        if want is None:
            return current
        if want > 0 or current == 0:
            self.inactive_since = None
            if current == 0 and want > 0:
                self.active_since = None  # activating: active once a pod is ready
            return min(want, self.max_replicas)
        return self._to_zero(now)

    def _to_zero(self, now: float) -> int:
        """``scaler.go`` ``handleScaleToZero``: active a stable window, then inactive a grace."""
        if self.active_since is None or now - self.active_since < self.stable_window_s:
            return 1
        if self.inactive_since is None:
            self.inactive_since = now
        if now - self.inactive_since < self.grace_s:
            return 1
        self.active_since = None
        return 0


class Oracle:
    name = "oracle"
    interval_s = 1.0
    wakes_on_arrival = False

    def __init__(self, profile: PoolProfile, per_second: IntArray,
                 rate_per_replica: float) -> None:
        need = np.ceil(per_second / rate_per_replica - 1e-9).astype(np.int64)
        ahead = math.ceil(profile.startup_s) + 1
        padded = np.concatenate([need, np.zeros(ahead + 1, dtype=np.int64)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, ahead + 1)
        self.plan = np.minimum(windows.max(axis=1)[: len(need) + 1], profile.max_replicas)

    def initial(self) -> int:
        return int(self.plan[0])

    def observe(self, stats: SecondStats) -> None:
        return None

    def decide(self, now: float, ready: int, current: int, latency: LatencyView) -> int:
        i = int(now)
        return int(self.plan[i]) if i < len(self.plan) else 0
