"""A model of one Triton pool behind the gateway, driven by a trace and scaled by a policy.

Where it sits: ``servegate simulate`` runs every policy (servegate's, the HPA, KEDA and KPA
families, the oracle) through :func:`simulate` on the same trace; :mod:`.report` scores the
results. Nothing here knows which policy it runs: a policy sees one :class:`SecondStats` per
simulated second, ``metrics_delay_s`` late (its metrics pipeline), and answers with a replica
count at its own interval.

The pool, stepped in ``SUBTICKS`` per second (fluid counts, every replica its own queue):

- **balancing**: the gateway's power of two choices on least outstanding, as a fluid: replica
  ``i`` draws in proportion to ``speed_i / (1 + waiting_i / K)`` (see :func:`p2c_shares`),
  so new, empty replicas catch up fast and a backlogged or slow one draws less;
- **service**: Triton's dynamic batching, a batch of ``b`` takes ``fixed + item x b``; each
  replica has its own speed (lognormal, ``service_cv``: GPUs and neighbours differ);
- **latency** of a request arriving at replica ``i``: ``2 x S(b)`` (wait for the running batch,
  then its own) plus the backlog ahead of it beyond one batch at full-batch speed, plus a
  queueing wait ``W`` with ``P(W > x) = rho exp(-x / theta)``, ``theta = S (1/K + cv^2) /
  2 / (1 - rho)`` (Kingman's heavy-traffic form for a bulk server of ``K`` slots): latency
  grows before capacity is reached, not only after. A request whose backlog wait passes
  ``timeout_s`` times out (counted above every latency);
- **replicas**: a replica asked for is ready after a start-up drawn around ``startup_s``
  (lognormal, ``startup_cv``) and costs replica-seconds from the moment it is asked for;
  removed replicas go at once (starting ones first, then the least loaded ready ones, whose
  queue moves to the others). With nothing ready, requests wait in the gateway's cold-start
  buffer (up to ``timeout_s``) and are dispatched with their wait when a replica is ready.

Scores are request-weighted and per second: for each arrival second the number of its
requests over each latency of a fixed grid (the SLO is a grid point), so the share of requests
over the SLO, goodput, each second's p99 and violation seconds (p99 over the SLO) all come
from one table. A one-hour trace at a few hundred req/s runs in about a second.
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
BoolArray = npt.NDArray[np.bool_]

SUBTICKS = 2
GRID_BELOW = 10  # latency grid: slo x 1.35**k for k in -10..GRID_ABOVE
GRID_ABOVE = 14
GRID_RATIO = 1.35
P99 = 0.99


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
        return self.per_tick(1)

    def per_tick(self, per_second: int) -> IntArray:
        """Counts per ``1/per_second`` s, for ``per_second`` dividing ``1/dt``."""
        ticks = round(1 / self.dt)
        group = ticks // per_second
        padded = np.zeros(self.seconds * ticks, dtype=np.int64)
        padded[: len(self.arrivals)] = self.arrivals
        out: IntArray = padded.reshape(self.seconds * per_second, group).sum(axis=1)
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
        """p99 latency of the requests of the last ``window_s`` seconds (None: none)."""


class SimPolicy(Protocol):
    name: str
    interval_s: float
    wakes_on_arrival: bool  # decides at once when traffic reaches a pool at zero
    metrics_delay_s: float  # how late its metrics pipeline delivers each second

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
    violation: BoolArray  # p99 over the SLO, by arrival second
    over_slo: FloatArray  # requests over the SLO (timed out included), by arrival second
    timed_out: float
    replica_s: float
    scale_events: int
    max_replicas: int

    @property
    def requests(self) -> float:
        return float(self.arrivals.sum())

    @property
    def requests_over_slo_pct(self) -> float:
        total = self.requests
        return 100.0 * float(self.over_slo.sum()) / total if total > 0 else 0.0

    @property
    def goodput(self) -> float:
        """Requests served within the SLO."""
        return self.requests - float(self.over_slo.sum())


def latency_grid(slo: float) -> FloatArray:
    """The latencies at which requests over are counted; ``GRID_BELOW`` is the SLO."""
    k = np.arange(-GRID_BELOW, GRID_ABOVE + 1, dtype=np.float64)
    return slo * GRID_RATIO**k


class _Scores:
    """Requests over each grid latency, by arrival second; answers the policies' p99."""

    def __init__(self, seconds: int, slo: float) -> None:
        self.grid = latency_grid(slo)
        self.over = np.zeros((seconds, len(self.grid)))
        self.arrived = np.zeros(seconds)

    def add(self, sec: int, n: float, over: FloatArray) -> None:
        self.arrived[sec] += n
        self.over[sec] += over

    def p99(self, now: float, window_s: float) -> float | None:
        hi = int(now)
        lo = max(0, hi - int(window_s))
        total = self.arrived[lo:hi].sum()
        if total <= 0:
            return None
        return quantile_from_over(self.over[lo:hi].sum(axis=0), total, self.grid)


def quantile_from_over(over: FloatArray, total: float, grid: FloatArray) -> float:
    """The first grid latency with at most 1% of ``total`` over it (the last if none)."""
    ok = over <= (1 - P99) * total + 1e-9
    idx = int(np.argmax(ok)) if ok.any() else len(grid) - 1
    return float(grid[idx])


@dataclass
class _Replicas:
    """Replica slots: alive, when ready, speed and outstanding requests (fluid)."""

    alive: BoolArray
    ready_at: FloatArray
    speed: FloatArray
    queue: FloatArray  # waiting beyond the batch in execution
    events: int = 0

    @staticmethod
    def empty(slots: int) -> _Replicas:
        return _Replicas(np.zeros(slots, dtype=bool), np.full(slots, np.inf), np.ones(slots),
                         np.zeros(slots))

    @property
    def current(self) -> int:
        return int(self.alive.sum())

    def ready_mask(self, now: float) -> BoolArray:
        mask: BoolArray = self.alive & (self.ready_at <= now + 1e-9)
        return mask

    def add(self, n: int, ready_at: FloatArray, speed: FloatArray) -> None:
        free = np.flatnonzero(~self.alive)[:n]
        self.alive[free] = True
        self.ready_at[free] = ready_at[: len(free)]
        self.speed[free] = speed[: len(free)]
        self.queue[free] = 0.0

    def remove(self, n: int, now: float) -> float:
        """Remove ``n``: starting ones (latest first), then the least loaded; their queue."""
        alive = np.flatnonzero(self.alive)
        starting = self.ready_at[alive] > now + 1e-9
        order = np.lexsort((self.queue[alive], -self.ready_at[alive], ~starting))
        gone = alive[order[:n]]
        moved = float(self.queue[gone].sum())
        self.alive[gone] = False
        self.ready_at[gone] = np.inf
        self.queue[gone] = 0.0
        return moved


def p2c_shares(waiting: FloatArray, rate: FloatArray, k: float) -> FloatArray:
    """Each replica's share of new requests under power of two choices (least outstanding).

    A fluid version of what the gateway's per-request choice converges to: a replica drains
    in proportion to its speed, so it wins comparisons in proportion to it, and one with more
    waiting than others (a batch ``k`` more halves its odds) loses them. A new, empty
    replica therefore draws more than its share of a backlog until it has caught up. (The
    executing batch is the same for all under load, so only what waits beyond it counts.)
    """
    w = rate / (1.0 + waiting / k)
    shares: FloatArray = w / w.sum()
    return shares


def over_fraction(grid: FloatArray, floor: FloatArray, rho: FloatArray,
                  theta: FloatArray) -> FloatArray:
    """Per replica (rows), the fraction of its new requests slower than each grid latency."""
    gap = grid[None, :] - floor[:, None]
    tail = rho[:, None] * np.exp(-np.maximum(gap, 0.0) / theta[:, None])
    out: FloatArray = np.where(gap < 0, 1.0, tail)
    return out


class Pool:
    """The replicas, the cold-start buffer and the scores of one run; steps sub-ticks."""

    def __init__(self, profile: PoolProfile, seconds: int, rng: np.random.Generator) -> None:
        self.p = profile
        self.rng = rng
        self.reps = _Replicas.empty(profile.max_replicas)
        self.scores = _Scores(seconds, profile.slo_p99_s)
        self.buffer: deque[tuple[float, float]] = deque()  # (arrival time, count)
        self.carry = 0.0  # requests moved off removed replicas
        self.timed_out = 0.0
        self.k = profile.instances * profile.max_batch
        self.full_rate = profile.max_rate
        self.sigma_s = math.sqrt(math.log(1 + profile.startup_cv**2))
        self.sigma_v = math.sqrt(math.log(1 + profile.service_cv**2))
        self.cs2 = (1.0 / self.k + profile.service_cv**2) / 2

    # ---- replicas ------------------------------------------------------------------------

    def start(self, n: int, now: float, ready_now: bool = False) -> None:
        n = min(n, self.p.max_replicas - self.reps.current)
        if n <= 0:
            return
        startup = self.p.startup_s * self.rng.lognormal(-self.sigma_s**2 / 2, self.sigma_s, n)
        speed = self.rng.lognormal(-self.sigma_v**2 / 2, self.sigma_v, n)
        self.reps.add(n, np.full(n, now) if ready_now else now + startup, speed)

    def scale_to(self, desired: int, now: float) -> None:
        current = self.reps.current
        if desired == current:
            return
        self.reps.events += 1
        if desired > current:
            self.start(desired - current, now)
        else:
            self.carry += self.reps.remove(current - desired, now)

    # ---- one sub-tick --------------------------------------------------------------------

    def step(self, now: float, dt: float, arrived: float) -> tuple[float, float, float]:
        """Advance ``dt`` with ``arrived`` new requests; (in flight, waiting, busy) now."""
        sec = int(now)
        if arrived > 0:
            self.scores.arrived[sec] += arrived
            self.buffer.append((now + dt / 2, arrived))
        ready = np.flatnonzero(self.reps.ready_mask(now))
        self._expire(now)
        if len(ready) == 0:
            waiting = sum(c for _, c in self.buffer) + self.carry
            return waiting, waiting, 0.0
        return self._serve(ready, now, dt)

    def _expire(self, now: float) -> None:
        grid_over = np.ones(len(self.scores.grid))
        while self.buffer and self.buffer[0][0] < now - self.p.timeout_s:
            t, n = self.buffer.popleft()
            self.timed_out += n
            self.scores.over[int(t)] += n * grid_over

    def _serve(self, ready: IntArray, now: float, dt: float) -> tuple[float, float, float]:
        p, reps = self.p, self.reps
        q, speed = reps.queue[ready], reps.speed[ready]
        cohorts = list(self.buffer)
        self.buffer.clear()
        total = sum(c for _, c in cohorts) + self.carry
        self.carry = 0.0
        rate = speed * self.full_rate  # per replica at full batches
        share = p2c_shares(q, rate, self.k)
        a = total * share
        lam = a / (dt * p.instances)  # per instance, req/s
        # the batch at which an instance keeps up, b = lam x S(b), and its service time
        denom = np.maximum(1.0 - lam * (p.batch_item_s / speed), 1e-6)
        b = np.minimum(np.maximum(lam * (p.batch_fixed_s / speed) / denom, 1.0), p.max_batch)
        service = (p.batch_fixed_s + p.batch_item_s * b) / speed
        rho = np.minimum(a / (dt * rate), 0.99)
        backlog = np.maximum(q + a / 2 - self.k, 0.0) / rate
        late = backlog >= p.timeout_s
        theta = service * self.cs2 / (1 - rho)
        frac = over_fraction(self.scores.grid, 2 * service + backlog, rho, theta)
        if late.any():
            frac[late] = 1.0
            self.timed_out += float(a[late].sum())
            a = np.where(late, 0.0, a)
        self._score(cohorts, share, frac, now)
        q = q + a
        # serve: an instance takes a batch of what waits (up to max batch)
        bq = np.minimum(np.maximum(q / p.instances, 1.0), p.max_batch)
        served = np.minimum(q, (p.instances * dt) * speed * bq
                            / (p.batch_fixed_s + p.batch_item_s * bq))
        q = q - served
        executing = served * service / dt
        reps.queue[ready] = q
        busy = float((executing / (bq * p.instances)).sum()) / len(ready)
        waiting = float(q.sum())
        return waiting + float(executing.sum()), waiting, min(busy, 1.0)

    def _score(self, cohorts: list[tuple[float, float]], share: FloatArray, frac: FloatArray,
               now: float) -> None:
        mixed = share @ frac  # the fraction over each grid latency, over replicas
        grid = self.scores.grid
        for t, n in cohorts:
            waited = now - t
            if waited > 0.5 / SUBTICKS + 1e-9:  # buffered: the wait adds to every latency
                shifted = share @ _shift(frac, grid, waited)
                self.scores.over[int(t)] += n * shifted
            else:
                self.scores.over[int(t)] += n * mixed


def _shift(frac: FloatArray, grid: FloatArray, waited: float) -> FloatArray:
    """``frac`` at ``grid - waited`` (the fraction over ``x`` after a wait), interpolated."""
    x = grid - waited
    out = np.empty_like(frac)
    for i in range(frac.shape[0]):
        out[i] = np.interp(x, grid, frac[i], left=1.0, right=0.0)
    return out


def simulate(trace: Trace, profile: PoolProfile, policy: SimPolicy,
             initial_replicas: int, seed: int = 0) -> RunResult:
    """Run ``policy`` on ``trace``; a drain tail of ``timeout_s`` follows the last arrival."""
    seconds = trace.seconds + math.ceil(profile.timeout_s) + 1
    counts = np.zeros(seconds * SUBTICKS)
    sub = trace.per_tick(SUBTICKS).astype(np.float64)
    counts[: len(sub)] = sub
    run = _Run(profile, seconds, policy, initial_replicas, np.random.default_rng(seed))
    rows = counts.reshape(seconds, SUBTICKS).tolist()
    for sec in range(seconds):
        run.second(sec, rows[sec])
    return run.result(trace.name)


class _Run:
    """The state of one simulation; :meth:`second` advances it by one simulated second."""

    def __init__(self, profile: PoolProfile, seconds: int, policy: SimPolicy, initial: int,
                 rng: np.random.Generator) -> None:
        self.p, self.policy = profile, policy
        self.pool = Pool(profile, seconds, rng)
        self.pool.start(initial, 0.0, ready_now=True)
        self.replica_s = 0.0
        self.max_replicas = initial
        self.replicas = np.zeros(seconds)
        self.ready = np.zeros(seconds)
        self.interval = max(1, round(policy.interval_s))
        self.delay = max(0, round(getattr(policy, "metrics_delay_s", 0.0)))
        self.pending: deque[SecondStats] = deque()

    def second(self, sec: int, counts: list[float]) -> None:
        conc = waiting = busy = 0.0
        dt = 1.0 / SUBTICKS
        pool = self.pool
        for k, a in enumerate(counts):
            c, w, b = pool.step(sec + k * dt, dt, a)
            conc, waiting, busy = conc + c, waiting + w, busy + b
            self.replica_s += pool.reps.current * dt
        n = len(counts)
        ready = int(pool.reps.ready_mask(sec + 1.0).sum())
        current = pool.reps.current
        self.replicas[sec], self.ready[sec] = current, ready
        self.pending.append(SecondStats(sec + 1.0, float(sum(counts)), conc / n, waiting / n,
                                        busy / n, ready, current))
        while self.pending and self.pending[0].t <= sec + 1.0 - self.delay + 1e-9:
            self.policy.observe(self.pending.popleft())
        queued = bool(pool.buffer) or pool.carry > 0
        wake = self.policy.wakes_on_arrival and current == 0 and queued
        if (sec + 1) % self.interval == 0 or wake:
            desired = self.policy.decide(sec + 1.0, ready, current, pool.scores)
            pool.scale_to(min(max(desired, 0), self.p.max_replicas), sec + 1.0)
            self.max_replicas = max(self.max_replicas, pool.reps.current)

    def result(self, trace: str) -> RunResult:
        s = self.pool.scores
        slo_col = GRID_BELOW
        ok = s.over <= (1 - P99) * s.arrived[:, None] + 1e-9
        idx = np.where(ok.any(axis=1), ok.argmax(axis=1), len(s.grid) - 1)
        p99 = np.where(s.arrived > 0, s.grid[idx], np.nan)
        over_slo = s.over[:, slo_col].copy()
        violation = (s.arrived > 0) & (over_slo > (1 - P99) * s.arrived + 1e-9)
        return RunResult(
            policy=self.policy.name, trace=trace, arrivals=s.arrived.copy(),
            replicas=self.replicas, ready=self.ready, p99=np.minimum(p99, self.p.timeout_s),
            violation=violation, over_slo=over_slo, timed_out=self.pool.timed_out,
            replica_s=self.replica_s, scale_events=self.pool.reps.events,
            max_replicas=self.max_replicas)
