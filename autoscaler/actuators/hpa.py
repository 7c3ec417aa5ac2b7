"""The ``hpa`` actuator: publish the decision and let a Kubernetes HPA apply it.

Where it sits: ``servegate autoscaler --actuator hpa`` decides as always but calls nothing;
the pool's size, as the decider sees it, is its last decision
(:class:`~autoscaler.actuators.base.ExportedActuator`). The HPA reads the autoscaler's
``/metrics`` through prometheus-adapter as External metrics (REFERENCE §7):

- ``servegate_autoscaler_desired_replicas{pool}`` with target ``AverageValue: 1`` - the HPA's
  ceil(total / target) is servegate's count (reproduces servegate's policy; HPA tolerance of
  10% still applies around the current size);
- ``servegate_autoscaler_demand{pool}`` (in-flight plus queued requests) with target
  ``AverageValue: <requests one replica should hold>`` - the HPA's own algorithm on
  servegate's fleet-wide demand signal instead.

prometheus-adapter rules (``rules.external`` in its Helm values)::

    external:
      - seriesQuery: 'servegate_autoscaler_desired_replicas{pool!=""}'
        resources: {overrides: {namespace: {resource: namespace}}}
        name: {as: "servegate_autoscaler_desired_replicas"}
        metricsQuery: 'max(<<.Series>>{<<.LabelMatchers>>}) by (pool)'
      - seriesQuery: 'servegate_autoscaler_demand{pool!=""}'
        resources: {overrides: {namespace: {resource: namespace}}}
        name: {as: "servegate_autoscaler_demand"}
        metricsQuery: 'max(<<.Series>>{<<.LabelMatchers>>}) by (pool)'

(``max``: every autoscaler replica, leader or not, exports the same decision.)

The HPA for pool ``cpu``, run by Deployment ``triton-cpu``::

    apiVersion: autoscaling/v2
    kind: HorizontalPodAutoscaler
    metadata: {name: triton-cpu}
    spec:
      scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: triton-cpu}
      minReplicas: 1            # 0 needs the HPAScaleToZero gate: use KEDA for scale-to-zero
      maxReplicas: 8
      metrics:
        - type: External
          external:
            metric:
              name: servegate_autoscaler_desired_replicas
              selector: {matchLabels: {pool: cpu}}
            target: {type: AverageValue, averageValue: "1"}
      behavior:                 # servegate already stabilizes and rate-limits
        scaleUp:
          stabilizationWindowSeconds: 0
          policies: [{type: Percent, value: 900, periodSeconds: 15}]
        scaleDown:
          stabilizationWindowSeconds: 0
          policies: [{type: Percent, value: 100, periodSeconds: 15}]
"""

from __future__ import annotations

from autoscaler.actuators.base import ExportedActuator

DESIRED_METRIC = "servegate_autoscaler_desired_replicas"
DEMAND_METRIC = "servegate_autoscaler_demand"


class HpaActuator(ExportedActuator):
    """Nothing to call: the HPA acts on :data:`DESIRED_METRIC` (see the module docstring)."""
