"""The simulated pool's model and service level, and the built-in trace names.

No numpy here: the ``servegate`` parser reads these defaults in every process.

Where it sits: the parameters of :mod:`autoscaler.simulate.model`, set from
``servegate simulate``'s flags, for every trace (built-in and CSV).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The built-in traces (autoscaler.simulate.traces builds them; named here for the CLI).
BUILTIN_TRACES = ("step", "diurnal", "bursty", "sporadic")


@dataclass(frozen=True, slots=True)
class PoolProfile:
    """One pool's model and service level (the defaults are the built-in traces')."""

    batch_fixed_s: float = 0.020
    batch_item_s: float = 0.005
    max_batch: int = 16
    instances: int = 1
    startup_s: float = 20.0
    timeout_s: float = 30.0
    slo_p99_s: float = 0.5
    max_replicas: int = 50
    startup_cv: float = 0.25  # start-up time: lognormal around startup_s, this spread
    service_cv: float = 0.08 # service time: each replica's speed, and batch to batch

    @property
    def concurrency(self) -> int:
        """Requests one replica executes at once (Knative's ``containerConcurrency``)."""
        return self.instances * self.max_batch

    @property
    def max_rate(self) -> float:
        """Requests/s one replica serves with full batches."""
        return self.instances * self.max_batch / self.batch_time(self.max_batch)

    def batch_time(self, batch: float) -> float:
        return self.batch_fixed_s + self.batch_item_s * batch

    def batch_time_v(self, batch: Any) -> Any:
        """:meth:`batch_time` of a numpy array (element-wise)."""
        return self.batch_fixed_s + self.batch_item_s * batch
