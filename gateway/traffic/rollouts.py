"""Rollouts as documents: their state in the shared store, their spec from the admin API.

Where it sits: between the pure rollout state machine (:mod:`router.rollout`) and the two
places rollouts leave the process: the shared store (:func:`state_to_doc`,
:func:`state_from_doc`, with the fleet counters the current step is judged against) and the
admin API's request body (:func:`rollout_spec`, every bad field a 400).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

from gateway.adapters.state import Doc
from gateway.errors import BadRequest
from router.rollout import HistoryEntry, RolloutSpec, RolloutState


def state_to_doc(state: RolloutState, base: Doc) -> Doc:
    doc = asdict(state)
    doc["base"] = base
    return doc


def state_from_doc(doc: Doc) -> tuple[RolloutState, Doc]:
    spec = RolloutSpec(**{**doc["spec"], "steps": tuple(doc["spec"]["steps"])})
    history = tuple(HistoryEntry(**h) for h in doc["history"])
    state = RolloutState(doc["model"], doc["canary"], doc["baseline"], spec, doc["step"],
                         doc["step_started_at"], doc["status"], history)
    return state, doc.get("base", {})


def rollout_spec(doc: Mapping[str, Any]) -> RolloutSpec:
    """A spec from the admin API body (any field omitted keeps its default)."""
    fields = set(RolloutSpec.__dataclass_fields__)
    unknown = sorted(set(doc) - fields - {"canary", "baseline"})
    if unknown:
        raise BadRequest(f"unknown rollout field(s) {unknown}; allowed: {sorted(fields)}")
    spec = RolloutSpec()
    try:
        values = {k: doc[k] for k in fields if k in doc}
        if "steps" in values:
            steps = tuple(float(s) for s in values["steps"])
            if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(steps):
                raise ValueError("steps must be increasing percentages in (0, 100]")
            values["steps"] = steps
        spec = replace(spec, **values)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"invalid rollout spec: {exc}") from None
    return spec
