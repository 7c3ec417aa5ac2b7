"""The pure scaling policy: ``decide(spec, observation, state, now) -> (Decision, state)``.

Imports no I/O library (asyncio, aiohttp, httpx, grpc, redis, kubernetes) and never reads the
clock; the collector hands it observations, the actuator applies its decisions.
"""

from autoscaler.policy.decide import decide
from autoscaler.policy.schedule import ScheduleWindow, make_window, schedule_floor
from autoscaler.policy.spec import (
    NO_DATA,
    Decision,
    Floor,
    NoData,
    Observation,
    RateLimit,
    Reading,
    ScalerSpec,
    ScalerState,
    Targets,
    Windowed,
    has_value,
)
from autoscaler.policy.split import Variant, merge_floors, plan_split
from autoscaler.policy.window import Window

__all__ = [
    "NO_DATA",
    "Decision",
    "Floor",
    "NoData",
    "Observation",
    "RateLimit",
    "Reading",
    "ScalerSpec",
    "ScalerState",
    "ScheduleWindow",
    "Targets",
    "Variant",
    "Window",
    "Windowed",
    "decide",
    "has_value",
    "make_window",
    "merge_floors",
    "plan_split",
    "schedule_floor",
]
