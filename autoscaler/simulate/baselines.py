"""The policies servegate is measured against: HPA, KEDA + HPA and Knative KPA, at any setting.

Where it sits: each is a :class:`~autoscaler.simulate.model.SimPolicy` the simulator runs on
the same trace as servegate's, built from a parameter set; :mod:`.fronts` sweeps the sets and
keeps each family's Pareto front, and the upstream defaults are named points (``HpaParams()``,
``KedaParams()``, ``KpaParams()``). The algorithms follow the shared REFERENCE.md §6-§8.

Each system reads its metric through its own pipeline (``metrics_delay_s`` plus a window):

- **HPA** through a Prometheus adapter: scraped every 15 s (``metrics_delay_s`` 15) and read
  as ``rate(...[30s])``, so it acts on arrivals 15-45 s old; it decides every 15 s. Metrics:
  requests/s per pod (``rps``), or that and queued requests per pod (``rps+queue``, the max of
  the two wins). ``ceil(current x metric / target)`` over ready pods, unready pods as 0 on
  scale-up, 10% tolerance; behaviour: scale-up ``max(pods, percent)`` per 15 s, scale-down
  100% per 15 s after the stabilization window (highest recommendation). Never below 1.
- **KEDA + HPA** (scale to zero): the same HPA 1 <-> N on the same metric; KEDA polls its
  trigger every ``polling_s`` (30 s), activates (0 -> 1) when the rate over the last poll
  exceeds ``activation_rps``, and scales to 0 after ``cooldown_s`` (300 s) inactive.
- **KPA** (``autoscaler.go``/``scaler.go``): every 2 s, ``ceil(avg metric / target)`` over a
  stable window (60 s) and a panic window (10% of it); panic when the panic window wants
  ``panic_threshold`` x the ready pods, never scales down while panicking and leaves after a
  stable window without; at most 1000x up and 2x down per tick. Metric: concurrency (target
  70% of ``containerConcurrency`` = instances x max batch) or requests/s (70% of a replica's
  full-batch rate). Scraped every second (``metrics_delay_s`` 1). Scale to zero after a stable
  window inactive and the 30 s grace; the activator wakes it on the first request.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from autoscaler.policy.spec import NoData
from autoscaler.policy.window import Window
from autoscaler.simulate.model import LatencyView, SecondStats
from autoscaler.simulate.profile import PoolProfile

TARGET_UTILIZATION = 0.70  # Knative's container-concurrency-target-percentage


@dataclass(frozen=True, slots=True)
class HpaParams:
    """One HPA configuration; the defaults are upstream's (requests/s at 70% of capacity)."""

    metric: str = "rps"  # "rps" or "rps+queue"
    utilization: float = TARGET_UTILIZATION  # rps target: this x a replica's full rate
    queue_drain_s: float = 1.0  # rps+queue: queued per pod target, in seconds of service
    stabilization_down_s: float = 300.0
    up_pods: int = 4
    up_percent: float = 100.0

    def label(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class KedaParams:
    """KEDA + HPA; defaults are upstream's (polling 30 s, cooldown 300 s, activation > 0)."""

    hpa: HpaParams = HpaParams()
    polling_s: float = 30.0
    cooldown_s: float = 300.0
    activation_rps: float = 0.0

    def label(self) -> dict[str, Any]:
        return {**self.hpa.label(), "polling_s": self.polling_s, "cooldown_s": self.cooldown_s,
                "activation_rps": self.activation_rps}


@dataclass(frozen=True, slots=True)
class KpaParams:
    """One KPA configuration; the defaults are upstream's (concurrency at 70%)."""

    metric: str = "concurrency"  # or "rps"
    utilization: float = TARGET_UTILIZATION
    stable_window_s: float = 60.0
    panic_window_pct: float = 10.0
    panic_threshold: float = 2.0

    def label(self) -> dict[str, Any]:
        return asdict(self)


class _Rate:
    """A metric's samples as a pipeline delivers them; the average over the last window."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, float, float]] = deque()  # (t, arrivals, queued)

    def add(self, stats: SecondStats) -> None:
        self.samples.append((stats.t, stats.arrivals, stats.queued))
        while self.samples and self.samples[0][0] <= stats.t - self.window_s:
            self.samples.popleft()

    def average(self) -> tuple[float, float] | None:
        if not self.samples:
            return None
        n = len(self.samples)
        return sum(s[1] for s in self.samples) / n, sum(s[2] for s in self.samples) / n


class HpaLike:
    """Kubernetes HPA (``replica_calculator.go`` and ``horizontal.go``) on requests/s."""

    name = "hpa"
    interval_s = 15.0
    wakes_on_arrival = False
    metrics_delay_s = 15.0
    rate_window_s = 30.0
    tolerance = 0.1
    period_s = 15.0

    def __init__(self, profile: PoolProfile, params: HpaParams | None = None) -> None:
        self.params = params or HpaParams()
        self.target = self.params.utilization * profile.max_rate
        self.queue_target = self.params.queue_drain_s * profile.max_rate
        self.max_replicas = profile.max_replicas
        self.min_replicas = 1
        self.rate = _Rate(self.rate_window_s)
        self.recommendations: deque[tuple[float, int]] = deque()
        self.ups: deque[tuple[float, int]] = deque()
        self.downs: deque[tuple[float, int]] = deque()

    def observe(self, stats: SecondStats) -> None:
        self.rate.add(stats)

    @property
    def metric(self) -> float:
        avg = self.rate.average()
        return 0.0 if avg is None else avg[0]

    def ratio_desired(self, total: float, target: float, ready: int, current: int) -> int:
        """``replica_calculator.go``: usage over ready pods, unready pods as 0 on scale-up."""
        ratio = total / ready / target
        unready = current - ready
        if unready <= 0 or ratio <= 1.0:
            if abs(ratio - 1.0) <= self.tolerance:
                return current
            return math.ceil(ratio * ready - 1e-9)
        new_ratio = total / current / target
        if abs(new_ratio - 1.0) <= self.tolerance or new_ratio < 1.0:
            return current
        return math.ceil(new_ratio * current - 1e-9)

    def metric_desired(self, ready: int, current: int) -> int:
        avg = self.rate.average()
        if ready == 0 or avg is None:
            return current  # no metrics from any ready pod: no change
        want = self.ratio_desired(avg[0], self.target, ready, current)
        if self.params.metric == "rps+queue":
            want = max(want, self.ratio_desired(avg[1], self.queue_target, ready, current))
        return want

    def decide(self, now: float, ready: int, current: int, latency: LatencyView) -> int:
        rec = self.metric_desired(ready, current)
        self.recommendations.append((now, rec))
        window = self.params.stabilization_down_s
        while self.recommendations and self.recommendations[0][0] <= now - window:
            self.recommendations.popleft()
        stabilized = max(current, rec)
        stabilized = min(stabilized, max((r for _, r in self.recommendations), default=rec))
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
            limit = max(start + self.params.up_pods,
                        math.ceil(start * (1 + self.params.up_percent / 100)))
            limit = min(max(limit, current), self.max_replicas)
            return min(desired, limit)
        if desired < current:
            return max(desired, self.min_replicas)  # Percent 100 per period
        return max(min(desired, self.max_replicas), self.min_replicas)

    def _record(self, now: float, current: int, desired: int) -> None:
        if desired > current:
            self.ups.append((now, desired - current))
        elif desired < current:
            self.downs.append((now, current - desired))


class KedaHpa:
    """KEDA's ScaledObject: HPA 1 <-> N, KEDA itself 0 <-> 1 (polling, cooldown)."""

    name = "keda"
    interval_s = 1.0  # steps every second; acts on the HPA's and KEDA's own periods
    wakes_on_arrival = False
    metrics_delay_s = HpaLike.metrics_delay_s

    def __init__(self, profile: PoolProfile, params: KedaParams | None = None) -> None:
        self.params = params or KedaParams()
        self.hpa = HpaLike(profile, self.params.hpa)
        self.poll = _Rate(self.params.polling_s)
        self.last_active: float | None = None

    def observe(self, stats: SecondStats) -> None:
        self.hpa.observe(stats)
        self.poll.add(stats)

    def active(self) -> bool:
        avg = self.poll.average()
        return avg is not None and (avg[0] > self.params.activation_rps or avg[1] > 0)

    def decide(self, now: float, ready: int, current: int, latency: LatencyView) -> int:
        t = round(now)
        if t % round(self.params.polling_s) == 0 and self.active():
            self.last_active = now
        if current == 0:
            return 1 if self.last_active == now else 0
        if t % round(self.hpa.interval_s) != 0:
            return current
        idle = self.last_active is None or now - self.last_active >= self.params.cooldown_s
        if idle and not self.active():
            return 0
        return self.hpa.decide(now, ready, current, latency)


class KpaLike:
    """Knative's KPA: stable and panic windows on concurrency or requests/s."""

    name = "kpa"
    interval_s = 2.0
    wakes_on_arrival = True
    metrics_delay_s = 1.0
    max_scale_up_rate = 1000.0
    max_scale_down_rate = 2.0
    grace_s = 30.0

    def __init__(self, profile: PoolProfile, params: KpaParams | None = None) -> None:
        self.params = p = params or KpaParams()
        per_replica = profile.concurrency if p.metric == "concurrency" else profile.max_rate
        self.target = p.utilization * per_replica
        self.stable_window_s = p.stable_window_s
        self.panic_window_s = p.stable_window_s * p.panic_window_pct / 100
        self.panic_threshold = p.panic_threshold
        self.max_replicas = profile.max_replicas
        self.window = Window(self.stable_window_s)
        self.panic_time: float | None = None
        self.max_panic_pods = 0
        self.active_since: float | None = 0.0
        self.inactive_since: float | None = None

    def observe(self, stats: SecondStats) -> None:
        # the scraper (pods) or the activator (at zero) reports every second
        value = stats.concurrency if self.params.metric == "concurrency" else stats.arrivals
        self.window.record(stats.t, value)

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
        if dppc / ready_f >= self.panic_threshold:
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
            if current == 0:
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
