"""The autoscaler: signals -> pure policy -> actuators (see shared DESIGN.md).

- :mod:`autoscaler.signals` - the collector's sources (gateway ``/metrics`` or Redis, Triton
  ``/metrics``, DCGM / Prometheus / NVML); I/O lives here and nowhere deeper.
- :mod:`autoscaler.policy` - ``decide(spec, observation, state, now) -> (Decision, state)``,
  pure, with its windows, schedules and split planning.
- :mod:`autoscaler.simulate` - ``servegate simulate``: the policy against HPA, KPA and an
  oracle on traces.
- :mod:`autoscaler.settings` - config section -> policy specs; :mod:`autoscaler.cli` - the
  ``simulate`` subcommand. The run loop and the actuators arrive with later issues.

The gateway and the autoscaler never import each other; they share :mod:`router` (config
schema, the gateway-stats hash schema) and meet through Redis or HTTP.
"""
