"""The decider: ``decide(spec, observation, state, now) -> (Decision, state)``. Pure.

Where it sits: called once per tick per pool by the control loop (and by the simulator) with
the collector's :class:`Observation`; its :class:`Decision` goes to the actuator. No I/O, no
clock: ``now`` (epoch seconds) comes in, the next :class:`ScalerState` goes out.

The steps, each a small function, in order:

1. **signals** - per signal a desired count, the max wins. Capacity form
   ``ceil(demand / target)`` for in-flight, arrival rate and queue depth, each taken as the
   larger of its stable- and panic-window averages (scale up on the short window, down only
   once the long one agrees); HPA form ``ceil(ready x observed / target)`` for GPU
   utilization, queue time and batch fill. Within ``tolerance`` of the current size a signal
   proposes the current size.
2. **p99 SLO** - p99 above the SLO forces ``ceil(ready x p99/slo)`` (capped at
   ``max_slo_boost``), unless a scale-up is still in flight or ended less than
   ``p99_window_s`` ago (its effect is not in the measured p99 yet), or nothing is waiting
   (fewer queued requests than ready replicas: more replicas would not lower the latency),
   or the queue is draining (panic-window queue below the stable-window queue).
3. **burst** (``burst_acceleration``) - the panic-window arrival rate a multiple of the
   stable one, or the queue doubling between the windows: size for the rate projected
   ``burst_projection`` of the rise further up (the queue signal drains the backlog).
   **panic** - Knative's: entered when the panic window needs ``panic_threshold`` x the ready
   replicas, extended while it does, left a full stable window later; it never scales down.
4. **missing signals** - any configured signal without data forbids scaling down (HPA's rule).
5. **stabilization** - scale-down takes the highest recommendation in the window (a
   queue-driven recommendation is remembered without its backlog part: drained, it is gone).
   The window is short (``scale_down_stabilization_s``) until a scale-up takes back most of a
   large recent scale-down - load comes in bursts - and then ``max_`` long (HPA's 300 s)
   until no such flap for twice that.
   **survivors** - no scale-down while replicas start or warm up (``warmup_s`` after), while
   the p99 is above ``survivor_p99_fraction`` of the SLO, nor below what the current arrival
   rate needs within the tolerance: the replicas that stay must hold the SLO at today's load.
6. **rate limits** - per direction, from the size at the start of the period (HPA behavior).
7. **bounds** - min/max, schedule minimums, external floors, and the **forecast** minimum
   (``forecast``: the arrival rate expected over the next start-up, trend and season, see
   :mod:`autoscaler.policy.forecast`, over the rate target).
8. **zero** - to zero only after ``scale_to_zero_grace_s`` with no arrivals, no in-flight and
   nothing queued; from zero to at least one on the first arrival. An activation
   (``Observation.activated``: a request waits while nothing is ready) is an arrival, and
   takes a pool at zero to one even when no signal has data yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from autoscaler.policy.forecast import Forecast, forecast, update
from autoscaler.policy.schedule import schedule_floor
from autoscaler.policy.spec import (
    Decision,
    NoData,
    Observation,
    RateLimit,
    Reading,
    ScalerSpec,
    ScalerState,
    Windowed,
    has_value,
)

_EPS = 1e-9


@dataclass
class _Notes:
    """The decision's reasons as they accumulate (local to one call)."""

    dominant: str = "none"
    clipped: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def clip(self, name: str, note: str) -> None:
        if name not in self.clipped:
            self.clipped.append(name)
        self.text.append(note)


# --------------------------------------------------------------------------------------------
# 1. per-signal proposals
# --------------------------------------------------------------------------------------------

def capacity_desired(demand: float, target: float, current: int, tolerance: float) -> int:
    """``ceil(demand / target)``, or ``current`` while within the tolerance band of it."""
    usage = max(demand, 0.0) / target
    if current > 0 and abs(usage / current - 1.0) <= tolerance + _EPS:
        return current
    return math.ceil(usage - _EPS)


def ratio_desired(ratio: float, ready: int, current: int, tolerance: float) -> int:
    """HPA: ``ceil(ready x observed/target)``, or ``current`` within the tolerance band."""
    if abs(ratio - 1.0) <= tolerance + _EPS:
        return current
    return math.ceil(ready * ratio - _EPS)


def windowed_demand(w: Windowed) -> Reading:
    """The larger of the stable and panic averages; whichever exists if only one does."""
    values = [r for r in (w.stable, w.panic) if has_value(r)]
    if not values:
        return w.stable if isinstance(w.stable, NoData) else w.panic
    return max(values)


def _capacity_signals(spec: ScalerSpec, obs: Observation) -> list[tuple[str, Windowed, float]]:
    t = spec.targets
    pairs = (("concurrency", obs.concurrency, t.concurrency_per_replica),
             ("rate", obs.arrival_rate, t.rate_per_replica),
             ("queue", obs.queued, t.queue_per_replica))
    return [(name, w, target) for name, w, target in pairs if target is not None]


def signal_proposals(spec: ScalerSpec, obs: Observation) -> tuple[dict[str, int], list[str]]:
    """Each configured signal's desired count, and the names of the signals without data."""
    proposals: dict[str, int] = {}
    missing: list[str] = []
    cur, ready, tol = obs.current_replicas, obs.ready_replicas, spec.tolerance
    for name, w, target in _capacity_signals(spec, obs):
        demand = windowed_demand(w)
        if has_value(demand):
            proposals[name] = capacity_desired(demand, target, cur, tol)
        else:
            missing.append(name)
    t = spec.targets
    for name, reading, hpa_target in (("gpu", obs.gpu_utilization, t.gpu_utilization),
                                      ("queue_time", obs.queue_time_s, t.queue_time_s),
                                      ("batch_fill", obs.batch_fill, t.batch_fill)):
        if hpa_target is None:
            continue
        if isinstance(reading, NoData):
            if not reading.idle:
                missing.append(name)
        elif ready > 0:
            proposals[name] = ratio_desired(reading / hpa_target, ready, cur, tol)
    return proposals, missing


def panic_demand(spec: ScalerSpec, obs: Observation) -> int | None:
    """Replicas the panic window alone asks for (the max over capacity signals)."""
    wanted = [math.ceil(max(w.panic, 0.0) / target - _EPS)
              for _, w, target in _capacity_signals(spec, obs) if has_value(w.panic)]
    return max(wanted) if wanted else None


# --------------------------------------------------------------------------------------------
# 2-3. SLO boost and panic mode
# --------------------------------------------------------------------------------------------

def slo_boost(spec: ScalerSpec, obs: Observation, state: ScalerState, now: float,
              desired: int, notes: _Notes) -> int:
    slo, p99 = spec.p99_slo_s, obs.p99_s
    if slo is None or not has_value(p99) or p99 <= slo:
        return desired
    settling = obs.current_replicas > obs.ready_replicas or (
        state.last_pending_up is not None and now - state.last_pending_up < spec.p99_window_s)
    if settling:
        notes.text.append(f"p99 {p99:.3g}s > slo {slo:g}s (replicas still starting: no boost)")
        return desired
    waiting, before = obs.queued.panic, obs.queued.stable
    if has_value(waiting) and waiting < max(obs.ready_replicas, 1):
        notes.text.append(f"p99 {p99:.3g}s > slo {slo:g}s but nothing waits: no boost")
        return desired
    if has_value(waiting) and has_value(before) and waiting < before:
        notes.text.append(f"p99 {p99:.3g}s > slo {slo:g}s, queue draining: no boost")
        return desired
    factor = min(p99 / slo, spec.max_slo_boost)
    boosted = math.ceil(max(obs.ready_replicas, 1) * factor - _EPS)
    if boosted > desired:
        notes.dominant = "p99"
        notes.text.append(f"p99 {p99:.3g}s > slo {slo:g}s: x{factor:.2f} -> {boosted}")
        return boosted
    return desired


@dataclass(frozen=True, slots=True)
class _Panic:
    since: float | None
    last_over: float | None
    max_pods: int


def panic_step(spec: ScalerSpec, obs: Observation, state: ScalerState, now: float,
               desired: int, notes: _Notes) -> tuple[int, _Panic]:
    wanted = panic_demand(spec, obs)
    over = wanted is not None and wanted / max(obs.ready_replicas, 1) >= spec.panic_threshold
    since, last_over, max_pods = state.panic_since, state.panic_last_over, state.max_panic
    if over:
        if since is None:
            notes.text.append(f"panic: panic window needs {wanted} for "
                              f"{obs.ready_replicas} ready")
        since = now if since is None else since
        last_over = now
    elif since is not None and last_over is not None and now - last_over >= spec.stable_window_s:
        notes.text.append("panic over")
        since, last_over, max_pods = None, None, 0
    if since is None:
        return desired, _Panic(None, None, 0)
    hold = max(max_pods, obs.current_replicas)
    if desired < hold:
        notes.clip("panic_hold", f"panic: hold {hold} (no scale-down while panicking)")
        desired = hold
    return desired, _Panic(since, last_over, desired)


def burst_desired(spec: ScalerSpec, obs: Observation, desired: int, notes: _Notes) -> int:
    """Arrivals accelerating or the queue growing: size for where the rise is going."""
    target, accel = spec.targets.rate_per_replica, spec.burst_acceleration
    rate, queued = obs.arrival_rate, obs.queued
    if target is None or accel is None or not has_value(rate.panic) or \
            not has_value(rate.stable):
        return desired
    rising = rate.panic >= accel * rate.stable and rate.panic > 0.5 * target
    growing = has_value(queued.panic) and has_value(queued.stable) and \
        queued.panic > 2 * queued.stable and \
        queued.panic > 0.1 * target * max(obs.ready_replicas, 1)
    if not (rising and growing):
        return desired
    projected = rate.panic + spec.burst_projection * max(rate.panic - rate.stable, 0.0)
    want = math.ceil(projected / target - _EPS)
    if want > desired:
        notes.dominant = "burst"
        notes.text.append(f"burst: {rate.stable:.0f} -> {rate.panic:.0f} req/s"
                          f"{', queue growing' if growing else ''}: {want}")
        return want
    return desired


def survivors(spec: ScalerSpec, obs: Observation, state: ScalerState, now: float,
              desired: int, notes: _Notes) -> int:
    """Keep the replicas whose removal would leave the survivors over the SLO."""
    current = obs.current_replicas
    if desired >= current:
        return desired
    warming = spec.warmup_s > 0 and (current > obs.ready_replicas or (
        state.last_pending_up is not None and now - state.last_pending_up < spec.warmup_s))
    if warming:
        notes.clip("warmup", f"replicas starting or warming up ({spec.warmup_s:g}s): keep")
        return current
    slo, p99 = spec.p99_slo_s, obs.p99_s
    if slo is not None and has_value(p99) and p99 > spec.survivor_p99_fraction * slo:
        notes.clip("survivors", f"p99 {p99:.3g}s near the SLO: no scale-down")
        return current
    target = spec.targets.rate_per_replica
    demand = windowed_demand(obs.arrival_rate)
    if target is None or not has_value(demand):
        return desired
    need = math.ceil(demand / (target * (1 + spec.tolerance)) - _EPS)
    if need > desired:
        kept = min(need, current)
        notes.clip("survivors", f"{demand:.0f} req/s needs {need}: keep {kept}")
        return kept
    return desired


# --------------------------------------------------------------------------------------------
# 5-6. stabilization and rate limits
# --------------------------------------------------------------------------------------------

def _lasting(desired: int, proposals: dict[str, int], dominant: str) -> int:
    """The part of a recommendation the stabilization window remembers.

    A queue backlog is transient demand: once drained its replicas are not needed, so a
    recommendation set by the queue signal (or a burst's projection, or a p99 boost) is
    remembered as the other signals' proposal.
    """
    if dominant not in ("queue", "burst", "p99"):
        return desired
    return max((v for k, v in proposals.items() if k != "queue"), default=0)


def stabilization_window(spec: ScalerSpec, state: ScalerState, now: float) -> float:
    """The scale-down window: the spec's, or a longer one learned from flaps (until quiet)."""
    base = spec.scale_down_stabilization_s
    if state.stabilization_s is None or state.last_flap is None:
        return base
    if now - state.last_flap > 2 * spec.max_scale_down_stabilization_s:
        return base
    return max(base, state.stabilization_s)


def is_flap(spec: ScalerSpec, state: ScalerState, now: float, current: int,
            desired: int) -> bool:
    """A scale-up that takes back most of a large, recent scale-down."""
    if desired <= current or state.last_down is None:
        return False
    t, high, low = state.last_down
    large = high - low >= max(2, 0.25 * high)
    recent = now - t <= spec.max_scale_down_stabilization_s
    return large and recent and desired >= low + (high - low) / 2


def stabilize(window: float, current: int, recs: tuple[tuple[float, int], ...],
              desired: int, notes: _Notes) -> int:
    """Scale down only to the highest recommendation of the stabilization window."""
    if desired >= current:
        return desired
    held = min(current, max(max((r for _, r in recs), default=0), desired))
    if held > desired:
        notes.clip("stabilization", f"scale-down stabilization {window:g}s: hold {held}")
        return held
    return desired


def period_start(events: tuple[tuple[float, int], ...], now: float, period_s: float,
                 current: int) -> int:
    """Replicas at the start of the period: the current size less the changes made since."""
    return current - sum(delta for t, delta in events if t > now - period_s)


def up_limit(limit: RateLimit, base: int) -> int:
    allowed = [base + limit.pods] if limit.pods is not None else []
    if limit.percent is not None:
        allowed.append(math.ceil(max(base, 1) * (1 + limit.percent / 100) - _EPS))
    return max(allowed) if allowed else 1 << 30


def down_limit(limit: RateLimit, base: int) -> int:
    allowed = [base - limit.pods] if limit.pods is not None else []
    if limit.percent is not None:
        allowed.append(math.floor(base * (1 - limit.percent / 100) + _EPS))
    return max(min(allowed), 0) if allowed else 0


def rate_limit(spec: ScalerSpec, current: int, events: tuple[tuple[float, int], ...],
               now: float, desired: int, notes: _Notes) -> int:
    if desired > current and spec.scale_up is not None:
        base = period_start(events, now, spec.scale_up.period_s, current)
        cap = max(up_limit(spec.scale_up, base), current)
        if desired > cap:
            notes.clip("scale_up_rate", f"scale-up limit {cap} "
                       f"(from {base} per {spec.scale_up.period_s:g}s)")
            return cap
    elif desired < current and spec.scale_down is not None:
        base = period_start(events, now, spec.scale_down.period_s, current)
        cap = min(down_limit(spec.scale_down, base), current)
        if desired < cap:
            notes.clip("scale_down_rate", f"scale-down limit {cap} "
                       f"(from {base} per {spec.scale_down.period_s:g}s)")
            return cap
    return desired


# --------------------------------------------------------------------------------------------
# 7-8. bounds, scale to zero, activation
# --------------------------------------------------------------------------------------------

def lower_bound(spec: ScalerSpec, obs: Observation, now: float,
                predicted: int = 0) -> tuple[int, str, str]:
    """The highest minimum at ``now``: (replicas, clip name, note)."""
    best = (spec.min_replicas, "min", f"min {spec.min_replicas}")
    if predicted > best[0]:
        best = (predicted, "forecast", f"forecast: min {predicted}")
    sched, label = schedule_floor(spec.schedules, now)
    if sched > best[0]:
        best = (sched, "schedule", f"schedule {label}: min {sched}")
    for floor in obs.floors:
        if floor.replicas > best[0]:
            best = (floor.replicas, "floor", f"{floor.reason}: min {floor.replicas}")
    return best


def bound(spec: ScalerSpec, obs: Observation, now: float, desired: int,
          notes: _Notes, predicted: int = 0) -> tuple[int, int]:
    lower, name, note = lower_bound(spec, obs, now, predicted)
    if desired < lower:
        notes.clip(name, note)
        desired = lower
    if desired > spec.max_replicas:
        notes.clip("max", f"max {spec.max_replicas}")
        desired = spec.max_replicas
    return desired, lower


def forecast_floor(spec: ScalerSpec, obs: Observation,
                   fc: Forecast, now: float) -> tuple[int, Forecast]:
    """Feed the forecaster; the replicas its forecast needs (0 without one)."""
    target, rate = spec.targets.rate_per_replica, obs.arrival_rate.panic
    if spec.forecast is None or target is None or not has_value(rate):
        return 0, fc
    fc = update(spec.forecast, fc, now, rate)
    predicted = forecast(spec.forecast, fc)
    if predicted is None:
        return 0, fc
    return math.ceil(predicted / target - _EPS), fc


def activity(obs: Observation) -> bool | None:
    """True if anything arrived, is in flight or queued lately; None if nothing is known."""
    if obs.activated:
        return True
    readings = [w.panic for w in (obs.arrival_rate, obs.concurrency, obs.queued)]
    known = [r for r in readings if has_value(r)]
    if not known:
        return None
    return any(r > 0 for r in known)


def zero_gate(spec: ScalerSpec, obs: Observation, last_active: float, now: float,
              panicking: bool, lower: int, desired: int, notes: _Notes) -> int:
    """Zero only after the idle grace; at zero, stay there until traffic comes."""
    current, active = obs.current_replicas, activity(obs)
    idle_for = now - last_active
    may_idle = lower == 0 and not panicking and active is False
    if may_idle and idle_for >= spec.scale_to_zero_grace_s:
        if desired > 0 and current > 0:
            notes.dominant = "idle"
            notes.text.append(f"idle {idle_for:.0f}s >= grace {spec.scale_to_zero_grace_s:g}s")
        return 0
    if may_idle and current == 0:
        return 0  # what the windows still remember is not traffic
    if desired == 0 and current > 0 and idle_for < spec.scale_to_zero_grace_s:
        notes.clip("idle_grace", f"idle {idle_for:.0f}s < grace "
                   f"{spec.scale_to_zero_grace_s:g}s: keep 1")
        return 1
    if desired == 0 and current == 0 and active:
        notes.dominant = "activation"
        notes.text.append("activation: traffic for a pool at zero")
        return 1
    return desired


# --------------------------------------------------------------------------------------------
# the decider
# --------------------------------------------------------------------------------------------

def decide(spec: ScalerSpec, obs: Observation, state: ScalerState,
           now: float) -> tuple[Decision, ScalerState]:
    """One scaling decision for one pool; see the module docstring for the steps."""
    notes = _Notes()
    current = obs.current_replicas
    active = activity(obs)
    last_active = now if active or state.last_active is None else state.last_active
    proposals, missing = signal_proposals(spec, obs)
    if not proposals:
        return _invalid(spec, obs, state, now, last_active, missing)

    notes.dominant, desired = max(proposals.items(), key=lambda kv: kv[1])
    desired = slo_boost(spec, obs, state, now, desired, notes)
    desired = burst_desired(spec, obs, desired, notes)
    recs = (*_recent(state.recommendations, now, spec.max_scale_down_stabilization_s),
            (now, _lasting(desired, proposals, notes.dominant)))
    desired, panic = panic_step(spec, obs, state, now, desired, notes)
    if missing and desired < current:
        notes.clip("missing_signals", f"no data for {', '.join(missing)}: no scale-down")
        desired = current
    window = stabilization_window(spec, state, now)
    desired = stabilize(window, current, _recent(recs, now, window), desired, notes)
    desired = survivors(spec, obs, state, now, desired, notes)
    desired = rate_limit(spec, current, state.events, now, desired, notes)
    predicted, fc = forecast_floor(spec, obs, state.forecast, now)
    state = replace(state, forecast=fc)
    desired, lower = bound(spec, obs, now, desired, notes, predicted)
    desired = zero_gate(spec, obs, last_active, now, panic.since is not None, lower, desired,
                        notes)

    state = _learn(spec, state, now, current, desired, window, notes)
    decision = Decision(desired, True, notes.dominant, tuple(notes.clipped),
                        tuple(sorted(proposals.items())), panic.since is not None,
                        _reason(desired, notes, proposals))
    return decision, _next_state(spec, state, now, obs, desired, panic, last_active, recs)


def _invalid(spec: ScalerSpec, obs: Observation, state: ScalerState, now: float,
             last_active: float, missing: list[str]) -> tuple[Decision, ScalerState]:
    notes = _Notes()
    notes.text.append("no data for " + (", ".join(missing) or "any signal") + ": keep")
    desired, _ = bound(spec, obs, now, obs.current_replicas, notes)
    activation = desired == 0 and obs.current_replicas == 0 and obs.activated
    if activation:
        notes.dominant, desired = "activation", 1
        notes.text.append("activation: a request waits for a pool at zero")
    decision = Decision(desired, activation, notes.dominant, tuple(notes.clipped), (), False,
                        _reason(desired, notes, {}))
    return decision, replace(state, last_active=last_active)


def _learn(spec: ScalerSpec, state: ScalerState, now: float, current: int, desired: int,
           window: float, notes: _Notes) -> ScalerState:
    """Remember scale-downs, and lengthen the stabilization window after a flap."""
    if is_flap(spec, state, now, current, desired):
        learned = spec.max_scale_down_stabilization_s
        notes.text.append(f"flap: stabilization window {window:g}s -> {learned:g}s")
        return replace(state, stabilization_s=learned, last_flap=now, last_down=None)
    if desired < current:
        prev = state.last_down
        high = prev[1] if prev is not None and prev[2] == current and now - prev[0] <= window \
            else current
        return replace(state, last_down=(now, high, desired), stabilization_s=window)
    return replace(state, stabilization_s=window)


def _recent(items: tuple[tuple[float, int], ...], now: float,
            horizon: float) -> tuple[tuple[float, int], ...]:
    return tuple((t, v) for t, v in items if t > now - horizon)


def _next_state(spec: ScalerSpec, state: ScalerState, now: float, obs: Observation,
                desired: int, panic: _Panic, last_active: float,
                recs: tuple[tuple[float, int], ...]) -> ScalerState:
    current = obs.current_replicas
    pending = obs.current_replicas > obs.ready_replicas
    horizon = max((r.period_s for r in (spec.scale_up, spec.scale_down) if r is not None),
                  default=0.0)
    events = _recent(state.events, now, horizon)
    if desired != current:
        events = (*events, (now, desired - current))
    return replace(
        state, panic_since=panic.since, panic_last_over=panic.last_over,
        max_panic=panic.max_pods, last_active=last_active,
        last_pending_up=now if desired > current or pending else state.last_pending_up,
        events=events, recommendations=recs)


def _reason(desired: int, notes: _Notes, proposals: dict[str, int]) -> str:
    head = f"{desired} by {notes.dominant}"
    if proposals:
        head += " (" + ", ".join(f"{k} {v}" for k, v in sorted(proposals.items())) + ")"
    return "; ".join([head, *notes.text])
