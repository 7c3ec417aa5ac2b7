"""Progressive rollout of a canary: the verdict per step and the state machine around it.

Where it sits: the gateway's rollout driver ticks every few seconds with the canary's and the
baseline's statistics over the current step's window (requests, errors, p99, and shadow output
agreement when shadowing) and calls :func:`advance`; the weights it returns are applied to the
split. Nothing here reads a clock: ``now`` comes in, decisions and their reasons go out, and the
history records why each step was taken.

    running --(step passed, interval over)--> next step ... --(100%)--> promoted
    running --(gate failed with enough samples)--> rolled_back (canary weight 0)
    running --(operator)--> aborted (canary weight 0) | promoted (canary weight 100)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Action = Literal["promote", "hold", "rollback"]
Status = Literal["running", "promoted", "rolled_back", "aborted"]


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    steps: tuple[float, ...] = (5.0, 10.0, 25.0, 50.0, 100.0)
    interval_s: float = 60.0
    min_samples: int = 100  # canary requests in the step's window before any verdict
    max_error_rate_increase: float = 0.01  # absolute: canary may exceed baseline by 1 point
    max_p99_ratio: float = 1.5  # canary p99 / baseline p99
    min_agreement: float = 0.99  # shadow output agreement, when measured


@dataclass(frozen=True, slots=True)
class WindowStats:
    requests: int
    errors: int
    p99_s: float | None = None
    agreement: float | None = None  # fraction of compared outputs that agreed

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str


def judge(spec: RolloutSpec, canary: WindowStats, baseline: WindowStats) -> Verdict:
    """Compare canary and baseline over one window: every gate must pass to promote."""
    if canary.requests < spec.min_samples:
        return Verdict("hold", f"{canary.requests}/{spec.min_samples} canary samples")
    excess = canary.error_rate - baseline.error_rate
    if excess > spec.max_error_rate_increase:
        return Verdict("rollback", f"error rate {canary.error_rate:.2%} vs baseline "
                                   f"{baseline.error_rate:.2%} (allowed +"
                                   f"{spec.max_error_rate_increase:.2%})")
    if canary.p99_s is not None and baseline.p99_s:
        ratio = canary.p99_s / baseline.p99_s
        if ratio > spec.max_p99_ratio:
            return Verdict("rollback", f"p99 {canary.p99_s * 1e3:.1f} ms is {ratio:.2f}x "
                                       f"baseline {baseline.p99_s * 1e3:.1f} ms "
                                       f"(allowed {spec.max_p99_ratio:g}x)")
    if canary.agreement is not None and canary.agreement < spec.min_agreement:
        return Verdict("rollback", f"shadow agreement {canary.agreement:.2%} below "
                                   f"{spec.min_agreement:.2%}")
    return Verdict("promote", f"error rate {canary.error_rate:.2%} (baseline "
                              f"{baseline.error_rate:.2%}), {canary.requests} samples")


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at: float
    step: int
    weight: float
    action: str
    reason: str


@dataclass(frozen=True, slots=True)
class RolloutState:
    model: str
    canary: str
    baseline: str
    spec: RolloutSpec
    step: int
    step_started_at: float
    status: Status = "running"
    history: tuple[HistoryEntry, ...] = field(default_factory=tuple)

    @property
    def canary_weight(self) -> float:
        if self.status in ("rolled_back", "aborted"):
            return 0.0
        if self.status == "promoted":
            return 100.0
        return self.spec.steps[self.step]

    def weights(self) -> dict[str, float]:
        w = self.canary_weight
        return {self.canary: w, self.baseline: 100.0 - w}

    def _log(self, now: float, action: str, reason: str) -> tuple[HistoryEntry, ...]:
        return (*self.history, HistoryEntry(now, self.step, self.canary_weight, action, reason))


def start(model: str, canary: str, baseline: str, spec: RolloutSpec, now: float) -> RolloutState:
    state = RolloutState(model, canary, baseline, spec, 0, now)
    return replace(state, history=state._log(now, "start", f"canary at {spec.steps[0]:g}%"))


def advance(state: RolloutState, canary: WindowStats, baseline: WindowStats,
            now: float) -> RolloutState:
    """One tick: roll back on a failed gate, move a step when the interval passed cleanly."""
    if state.status != "running":
        return state
    verdict = judge(state.spec, canary, baseline)
    if verdict.action == "rollback":
        rolled = replace(state, status="rolled_back")
        return replace(rolled, history=state._log(now, "rollback", verdict.reason))
    if verdict.action == "hold" or now - state.step_started_at < state.spec.interval_s:
        return state
    if state.step + 1 >= len(state.spec.steps):
        done = replace(state, status="promoted")
        return replace(done, history=state._log(now, "promoted", verdict.reason))
    nxt = replace(state, step=state.step + 1, step_started_at=now)
    return replace(nxt, history=state._log(
        now, "step", f"{verdict.reason}; canary to {nxt.canary_weight:g}%"))


def operator(state: RolloutState, action: Literal["abort", "promote"], now: float,
             who: str = "admin API") -> RolloutState:
    if state.status != "running":
        return state
    status: Status = "aborted" if action == "abort" else "promoted"
    done = replace(state, status=status)
    return replace(done, history=state._log(now, action, f"by {who}"))
