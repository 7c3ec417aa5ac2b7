"""A discrete-time model of one Triton pool, driven by a trace and scaled by a policy.

Where it sits: ``servegate simulate`` runs every policy (servegate's, HPA-like, KPA-like,
oracle) through :func:`simulate` on the same trace; :mod:`autoscaler.simulate.report` scores
the results. Nothing here knows which policy it runs: a policy sees one
:class:`SecondStats` per simulated second (what a collector scraping every second would see)
and answers with a replica count at its own interval.

The pool, per tick of ``dt`` seconds (fluid, FIFO, all counts may be fractional):

- arrivals of the tick join the queue as one cohort (mean arrival time mid-tick);
- a cohort that has waited longer than ``timeout_s`` is dropped (timed out);
- ready replicas run ``instances`` model instances each; Triton-like dynamic batching takes
  ``b = min(max_batch, max(1, queued / instances))`` per batch, a batch takes
  ``batch_fixed_s + batch_item_s * b``, so an instance serves ``b / (fixed + item*b)``
  requests per second: larger batches under load, more throughput, as Triton does. Each
  served request's latency is its wait plus the service time of its batch;
- a replica asked for becomes ready ``startup_s`` later (cold start) and costs replica-seconds
  from the moment it is asked for; removed replicas go at once (starting ones first).

At light load the queue settles at about one batch per instance, so a request waits about one
service time: the model reproduces the latency/throughput trade-off of dynamic batching
without simulating every request, which keeps a full run within seconds.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from autoscaler.simulate.profile import PoolProfile

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Latency histogram: log-spaced bins with the SLO as an exact edge.
BIN_RATIO = 1.08
BINS_BELOW_SLO = 110  # down to slo / 1.08**110 (~0.1 ms for a 0.5 s SLO)
BINS = 250  # up to slo * 1.08**139 (~22 000 s), last bin: timed out


@dataclass(frozen=True, slots=True)
class Trace:
    """Arrival counts per tick of ``dt`` seconds."""

    name: str
    dt: float
    arrivals: IntArray

    @property
    def seconds(self) -> int:
        return math.ceil(len(self.arrivals) * self.dt - 1e-9)

    def per_second(self) -> IntArray:
        ticks = round(1 / self.dt)
        padded = np.zeros(self.seconds * ticks, dtype=np.int64)
        padded[: len(self.arrivals)] = self.arrivals
        out: IntArray = padded.reshape(self.seconds, ticks).sum(axis=1)
        return out


@dataclass(frozen=True, slots=True)
class SecondStats:
    """One second as a collector scraping the gateway and Triton every second sees it."""

    t: float  # end of the second
    arrivals: float
    concurrency: float  # average in flight (queued + executing) over the second
    queued: float  # average waiting (not executing) over the second
    busy: float  # average fraction of instance time executing (GPU utilization)
    ready: int
    current: int


class LatencyView(Protocol):
    def p99(self, now: float, window_s: float) -> float | None:
        """p99 latency of the requests completed in the last ``window_s`` (None: none)."""


class SimPolicy(Protocol):
    name: str
    interval_s: float
    wakes_on_arrival: bool  # decides at once when traffic reaches a pool at zero

    def observe(self, stats: SecondStats) -> None: ...

    def decide(self, now: float, ready: int, current: int, latency: LatencyView) -> int: ...


@dataclass
class RunResult:
    """Per-second series and totals of one policy on one trace."""

    policy: str
    trace: str
    arrivals: FloatArray  # per second
    replicas: FloatArray  # asked for (ready + starting), per second
    ready: FloatArray
    p99: FloatArray  # by arrival second; nan where nothing arrived
    violation: npt.NDArray[np.bool_]  # p99 over the SLO, by arrival second
    timed_out: float
    replica_s: float
    scale_events: int
    max_replicas: int


def bin_edges(slo: float) -> FloatArray:
    """Lower edge of every latency bin (bin ``BINS_BELOW_SLO`` starts at the SLO)."""
    return slo * BIN_RATIO ** (np.arange(BINS, dtype=np.float64) - BINS_BELOW_SLO)


class _Histograms:
    """Latency histograms by arrival second (for scoring) and completion second (p99 signal)."""

    def __init__(self, seconds: int, slo: float) -> None:
        self.by_arrival = np.zeros((seconds, BINS))
        self.by_done = np.zeros((seconds, BINS))
        self._slo = slo
        self._log_ratio = math.log(BIN_RATIO)
        self.edges = bin_edges(slo)

    def bin(self, latency: float) -> int:
        if latency <= 0:
            return 0
        i = BINS_BELOW_SLO + math.floor(math.log(latency / self._slo) / self._log_ratio)
        return min(max(i, 0), BINS - 2)

    def add(self, arrived: float, done: float, latency: float, n: float) -> None:
        b = self.bin(latency)
        self.by_arrival[int(arrived), b] += n
        self.by_done[min(int(done), len(self.by_done) - 1), b] += n

    def timeout(self, arrived: float, now: float, n: float, timeout_s: float) -> None:
        self.by_arrival[int(arrived), BINS - 1] += n
        self.by_done[min(int(now), len(self.by_done) - 1), self.bin(timeout_s)] += n

    def p99(self, now: float, window_s: float) -> float | None:
        hi = int(now)
        rows = self.by_done[max(0, hi - int(window_s)):hi].sum(axis=0)
        total = rows.sum()
        if total <= 0:
            return None
        idx = int(np.searchsorted(np.cumsum(rows), 0.99 * total))
        return float(self.edges[min(idx, BINS - 1)] * math.sqrt(BIN_RATIO))


@dataclass
class _Pool:
    """Replica bookkeeping: ready ones and the ready times of starting ones."""

    ready: int
    starting: deque[float]
    events: int = 0

    @property
    def current(self) -> int:
        return self.ready + len(self.starting)

    def promote(self, now: float) -> None:
        while self.starting and self.starting[0] <= now + 1e-9:
            self.starting.popleft()
            self.ready += 1

    def scale_to(self, desired: int, now: float, startup_s: float) -> None:
        if desired == self.current:
            return
        self.events += 1
        while self.current < desired:
            self.starting.append(now + startup_s)
        while self.current > desired:
            if self.starting:
                self.starting.pop()
            else:
                self.ready -= 1


def simulate(trace: Trace, profile: PoolProfile, policy: SimPolicy,
             initial_replicas: int) -> RunResult:
    """Run ``policy`` on ``trace``; a drain tail of ``timeout_s`` follows the last arrival."""
    ticks = round(1 / trace.dt)
    seconds = trace.seconds + math.ceil(profile.timeout_s) + 1
    arrivals = np.zeros(seconds * ticks, dtype=np.int64)
    arrivals[: len(trace.arrivals)] = trace.arrivals
    run = _Run(profile, trace.dt, seconds, policy, initial_replicas)
    counts = arrivals.tolist()
    for sec in range(seconds):
        run.second(sec, counts[sec * ticks:(sec + 1) * ticks])
    return run.result(trace.name, arrivals.reshape(seconds, ticks).sum(axis=1))


class _Run:
    """The state of one simulation; :meth:`second` advances it by one simulated second."""

    def __init__(self, profile: PoolProfile, dt: float, seconds: int, policy: SimPolicy,
                 initial: int) -> None:
        self.p, self.dt, self.policy = profile, dt, policy
        self.hist = _Histograms(seconds, profile.slo_p99_s)
        self.pool = _Pool(initial, deque())
        self.q_time: deque[float] = deque()
        self.q_count: deque[float] = deque()
        self.queued = 0.0
        self.timed_out = 0.0
        self.replica_s = 0.0
        self.max_replicas = initial
        self.replicas = np.zeros(seconds)
        self.ready = np.zeros(seconds)
        self.interval = max(1, round(policy.interval_s))

    def second(self, sec: int, counts: list[int]) -> None:
        conc = waiting = busy = 0.0
        for k, a in enumerate(counts):
            now = sec + k * self.dt
            self.pool.promote(now)
            if a:
                self.q_time.append(now + self.dt / 2)
                self.q_count.append(float(a))
                self.queued += a
            if self.queued > 0:
                self._expire(now)
                c, w, b = self._serve(now)
                conc, waiting, busy = conc + c, waiting + w, busy + b
            self.replica_s += self.pool.current * self.dt
        n = len(counts)
        arrived = float(sum(counts))
        self.replicas[sec], self.ready[sec] = self.pool.current, self.pool.ready
        self.policy.observe(SecondStats(sec + 1.0, arrived, conc / n, waiting / n, busy / n,
                                        self.pool.ready, self.pool.current))
        wake = self.policy.wakes_on_arrival and self.pool.current == 0 and self.queued > 0
        if (sec + 1) % self.interval == 0 or wake:
            desired = self.policy.decide(sec + 1.0, self.pool.ready, self.pool.current,
                                         self.hist)
            desired = min(max(desired, 0), self.p.max_replicas)
            self.pool.scale_to(desired, sec + 1.0, self.p.startup_s)
            self.max_replicas = max(self.max_replicas, self.pool.current)

    def _expire(self, now: float) -> None:
        limit = now - self.p.timeout_s
        while self.q_time and self.q_time[0] < limit:
            n = self.q_count.popleft()
            t = self.q_time.popleft()
            self.queued -= n
            self.timed_out += n
            self.hist.timeout(t, now, n, self.p.timeout_s)
        if not self.q_time:
            self.queued = 0.0

    def _serve(self, now: float) -> tuple[float, float, float]:
        """Serve one tick; returns (in flight, waiting, busy fraction) for the averages."""
        p, ready = self.p, self.pool.ready
        if ready == 0 or self.queued <= 0:
            return self.queued, self.queued, 0.0
        instances = ready * p.instances
        batch = min(float(p.max_batch), max(1.0, self.queued / instances))
        service = p.batch_time(batch)
        served = min(self.queued, instances * self.dt * batch / service)
        self.queued -= served
        done = now + self.dt + service
        left = served
        while left > 1e-12 and self.q_count:
            take = min(self.q_count[0], left)
            t = self.q_time[0]
            self.hist.add(t, done, done - t, take)
            left -= take
            if take >= self.q_count[0] - 1e-12:
                self.q_count.popleft()
                self.q_time.popleft()
            else:
                self.q_count[0] -= take
        if not self.q_count:
            self.queued = 0.0
        executing = served * service / self.dt
        busy = min(1.0, served / batch * service / (instances * self.dt))
        return self.queued + executing, self.queued, busy

    def result(self, trace: str, arrivals: IntArray) -> RunResult:
        p99, violation = score(self.hist.by_arrival, self.hist.edges)
        p99 = np.minimum(p99, self.p.timeout_s)  # timed out reads as the timeout (nan stays)
        return RunResult(
            policy=self.policy.name, trace=trace, arrivals=arrivals.astype(np.float64),
            replicas=self.replicas, ready=self.ready, p99=p99, violation=violation,
            timed_out=self.timed_out, replica_s=self.replica_s,
            scale_events=self.pool.events, max_replicas=self.max_replicas)


def score(by_arrival: FloatArray, edges: FloatArray) -> tuple[FloatArray,
                                                                npt.NDArray[np.bool_]]:
    """p99 by arrival second (bin midpoints; nan where nothing arrived) and SLO violations.

    A second violates the SLO when the bin holding its p99 lies at or above the SLO edge;
    timed-out requests sit in the last bin, above everything.
    """
    cum = np.cumsum(by_arrival, axis=1)
    total = cum[:, -1]
    idx = (cum < 0.99 * total[:, None] - 1e-9).sum(axis=1)
    idx = np.minimum(idx, BINS - 1)
    has = total > 1e-9
    p99 = np.where(has, edges[idx] * math.sqrt(BIN_RATIO), np.nan)
    return p99, has & (idx >= BINS_BELOW_SLO)
