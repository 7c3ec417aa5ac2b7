"""The autoscaler's Prometheus metrics, defined once, in their own registry.

Where it sits: the control loop updates them after each decision and activation; the status
server renders them on ``GET /metrics``. The ``hpa`` actuator is just these numbers: an HPA
reads ``servegate_autoscaler_desired_replicas{pool}`` (or ``servegate_autoscaler_demand``)
through prometheus-adapter (see :mod:`autoscaler.actuators.hpa`).

==================================================  =======  ===================================
metric                                              type     meaning
==================================================  =======  ===================================
``servegate_autoscaler_desired_replicas{pool}``     gauge    the decision
``servegate_autoscaler_current_replicas{pool}``     gauge    the pool's size (starting included)
``servegate_autoscaler_ready_replicas{pool}``       gauge    replicas serving
``servegate_autoscaler_desired_gpus{pool}``         gauge    desired x GPUs per replica
``servegate_autoscaler_demand{pool}``               gauge    in-flight + queued requests
                                                             (stable-window average)
``servegate_autoscaler_decision_info{pool,...}``    gauge    1, labels ``dominant`` (what set
                                                             the number), ``clipped_by``,
                                                             ``valid``; one series per pool
``servegate_autoscaler_activations_total``          counter  activations by ``pool``, ``source``
                                                             (http, redis)
``servegate_autoscaler_scale_errors_total{pool}``   counter  actuator errors
``servegate_autoscaler_leader``                     gauge    1 while this replica may act
==================================================  =======  ===================================
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "AutoscalerMetrics"]

INFO_LABELS = ("pool", "dominant", "clipped_by", "valid")


class AutoscalerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.desired = Gauge("servegate_autoscaler_desired_replicas",
                             "Replicas the autoscaler decided on", ["pool"], registry=r)
        self.current = Gauge("servegate_autoscaler_current_replicas",
                             "Replicas the pool has (starting ones included)", ["pool"],
                             registry=r)
        self.ready = Gauge("servegate_autoscaler_ready_replicas", "Replicas serving",
                           ["pool"], registry=r)
        self.desired_gpus = Gauge("servegate_autoscaler_desired_gpus",
                                  "GPUs the decision amounts to: desired replicas x GPUs per "
                                  "replica (a fraction for MIG or time slicing)", ["pool"],
                                  registry=r)
        self.demand = Gauge("servegate_autoscaler_demand",
                            "In-flight plus queued requests (stable-window average)", ["pool"],
                            registry=r)
        self.info = Gauge("servegate_autoscaler_decision_info",
                          "The last decision's reason as labels (value 1)", INFO_LABELS,
                          registry=r)
        self.activations = Counter("servegate_autoscaler_activations",
                                   "Activations (a request for a pool with nothing ready)",
                                   ["pool", "source"], registry=r)
        self.scale_errors = Counter("servegate_autoscaler_scale_errors",
                                    "Actuator errors", ["pool"], registry=r)
        self.leader = Gauge("servegate_autoscaler_leader", "1 while this replica may act",
                            registry=r)
        self._info_labels: dict[str, tuple[str, ...]] = {}

    def decision(self, pool: str, *, desired: int, current: int, ready: int, demand: float,
                 dominant: str, clipped_by: tuple[str, ...], valid: bool,
                 gpus_per_replica: float = 1.0) -> None:
        self.desired.labels(pool).set(desired)
        self.desired_gpus.labels(pool).set(desired * gpus_per_replica)
        self.current.labels(pool).set(current)
        self.ready.labels(pool).set(ready)
        self.demand.labels(pool).set(demand)
        labels = (pool, dominant, ",".join(clipped_by), "true" if valid else "false")
        old = self._info_labels.get(pool)
        if old != labels:
            if old is not None:
                self.info.remove(*old)
            self.info.labels(*labels).set(1)
            self._info_labels[pool] = labels

    def render(self) -> bytes:
        return generate_latest(self.registry)
