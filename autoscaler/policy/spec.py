"""Value types of one scaling decision: what the decider is told and what it says back.

Where it sits in the control loop::

    collector (signals, windows) --Observation--> decide(spec, obs, state, now) --Decision-->
    actuator                                  ^ ScalerSpec (from config)  | ScalerState (next)

Everything here is frozen and free of I/O. A signal that is missing or stale is a
:class:`NoData` value carrying its reason, never a zero: zero means "measured, and nothing
there" (an idle pool), while no data means "we do not know" and forbids scaling down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeGuard

from autoscaler.policy.forecast import Forecast, ForecastSpec
from autoscaler.policy.schedule import ScheduleWindow


@dataclass(frozen=True, slots=True)
class NoData:
    """A reading we do not have, and why.

    ``idle`` marks a per-request ratio (queue time per request, batch fill) that is undefined
    because the source answered but served no requests in the window: it proposes nothing and,
    unlike a missing source, does not block scaling down.
    """

    reason: str
    idle: bool = False


Reading = float | NoData
NO_DATA = NoData("no data")


def has_value(reading: Reading) -> TypeGuard[float]:
    return not isinstance(reading, NoData)


@dataclass(frozen=True, slots=True)
class Windowed:
    """A signal averaged over the stable window and over the (shorter) panic window."""

    stable: Reading = NO_DATA
    panic: Reading = NO_DATA

    @staticmethod
    def of(value: float) -> Windowed:
        """The same value in both windows (tests, steady states)."""
        return Windowed(value, value)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """How far one direction may move per period, as Kubernetes HPA ``behavior`` policies.

    ``pods`` and ``percent`` are measured from the replica count at the start of the period;
    when both are set the more permissive wins (HPA ``selectPolicy: Max``). Neither set means
    this direction is not limited.
    """

    period_s: float
    pods: int | None = None
    percent: float | None = None


@dataclass(frozen=True, slots=True)
class Targets:
    """Per-signal targets; ``None`` turns the signal off.

    Capacity form (desired = ceil(demand / target per replica)): ``concurrency_per_replica``
    (gateway in-flight), ``rate_per_replica`` (arrivals/s), ``queue_per_replica`` (queued in
    the gateway plus Triton pending). HPA form (desired = ceil(ready x observed / target)):
    ``gpu_utilization`` (0..1), ``queue_time_s`` (Triton queue time per request),
    ``batch_fill`` (average batch / max batch, 0..1).
    """

    concurrency_per_replica: float | None = None
    rate_per_replica: float | None = None
    queue_per_replica: float | None = None
    gpu_utilization: float | None = None
    queue_time_s: float | None = None
    batch_fill: float | None = None


@dataclass(frozen=True, slots=True)
class Floor:
    """A minimum set from outside the pool's own signals (e.g. split planning), with a name."""

    replicas: int
    reason: str


@dataclass(frozen=True)
class ScalerSpec:
    """How one pool scales. Defaults are servegate's; see DESIGN.md for the HPA/KPA ones."""

    targets: Targets
    min_replicas: int = 0
    max_replicas: int = 10
    p99_slo_s: float | None = None
    max_slo_boost: float = 2.0
    p99_window_s: float = 10.0  # the collector's p99 window
    tolerance: float = 0.1
    stable_window_s: float = 30.0
    panic_window_s: float = 3.0  # Knative's ratio: 10% of the stable window
    panic_threshold: float = 2.0
    scale_up: RateLimit | None = RateLimit(period_s=1.0, pods=4, percent=900.0)
    scale_down: RateLimit | None = RateLimit(period_s=10.0, percent=50.0)
    scale_down_stabilization_s: float = 30.0
    # After a flap (a scale-up taking back most of a large recent scale-down) the window is
    # this long, until no flap for twice as long.
    max_scale_down_stabilization_s: float = 300.0
    scale_to_zero_grace_s: float = 30.0
    schedules: tuple[ScheduleWindow, ...] = ()
    # GPUs one replica holds (a fraction for MIG or time slicing): what a replica costs.
    gpus_per_replica: float = 1.0
    # The pool surged for the replicas this one loses to interruptions (policy/fallback.py).
    fallback_pool: str | None = None
    # A minimum from the arrival-rate forecast over the next start-up (needs a rate target).
    forecast: ForecastSpec | None = None
    # Burst: the panic-window arrival rate this many times the stable one (or the queue
    # doubling between the windows) sizes for the rate projected ``burst_projection`` of the
    # rise further (None: off).
    burst_acceleration: float | None = None
    burst_projection: float = 0.5
    # No scale-down while replicas start or within this long after (new replicas warm up),
    # nor while the p99 is above ``survivor_p99_fraction`` of the SLO.
    warmup_s: float = 0.0
    survivor_p99_fraction: float = 1.0


@dataclass(frozen=True, slots=True)
class Observation:
    """What the collector knows about one pool at ``now``.

    ``current_replicas`` is the pool's size as the actuator last set it (starting replicas
    included); ``ready_replicas`` the ones serving. ``activated`` says a request is waiting
    for the pool and no replica is ready yet (the gateway's activation): it counts as traffic
    even where no signal has data yet.
    """

    current_replicas: int
    ready_replicas: int
    concurrency: Windowed = Windowed()
    arrival_rate: Windowed = Windowed()
    queued: Windowed = Windowed()
    p99_s: Reading = NO_DATA
    gpu_utilization: Reading = NO_DATA
    queue_time_s: Reading = NO_DATA
    batch_fill: Reading = NO_DATA
    floors: tuple[Floor, ...] = ()
    activated: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The decider's answer with its reasons, for logs, metrics and the status endpoint.

    ``valid`` is False when there was nothing to decide on (every signal missing); ``desired``
    then repeats the current size. ``dominant`` names the signal (or limit) that set the
    number; ``clipped_by`` lists the limits that changed it on the way; ``signals`` holds
    each signal's own proposal.
    """

    desired: int
    valid: bool
    dominant: str
    clipped_by: tuple[str, ...]
    signals: tuple[tuple[str, int], ...]
    panicking: bool
    reason: str


@dataclass(frozen=True)
class ScalerState:
    """What the decider remembers between calls (returned, never mutated).

    ``events`` are the decider's own changes ``(time, delta)`` for the rate limits,
    ``recommendations`` ``(time, replicas)`` for the scale-down stabilization window,
    ``last_pending_up`` the last time a scale-up was asked for or still starting.
    ``stabilization_s`` is the scale-down window in use (None: the spec's),
    ``last_down`` the last scale-down ``(time, from, to)``, ``last_flap`` when one was taken back,
    ``forecast`` the arrival-rate forecaster's memory.
    """

    panic_since: float | None = None
    panic_last_over: float | None = None
    max_panic: int = 0
    last_active: float | None = None
    last_pending_up: float | None = None
    events: tuple[tuple[float, int], ...] = field(default=())
    recommendations: tuple[tuple[float, int], ...] = field(default=())
    stabilization_s: float | None = None
    last_down: tuple[float, int, int] | None = None
    last_flap: float | None = None
    forecast: Forecast = field(default=Forecast())


def sum_available(*readings: Reading) -> Reading:
    """Sum of the readings that have a value; :class:`NoData` only when none has one."""
    values = [r for r in readings if has_value(r)]
    if values:
        return sum(values)
    reasons = "; ".join(r.reason for r in readings if isinstance(r, NoData))
    return NoData(reasons or "no data")
