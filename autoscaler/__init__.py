"""The autoscaler: signals -> pure policy -> actuators (see shared DESIGN.md).

- :mod:`autoscaler.signals` - the collector's sources (gateway ``/metrics`` or Redis, Triton
  ``/metrics``, DCGM / Prometheus / NVML); I/O lives here and nowhere deeper.
- :mod:`autoscaler.policy` - ``decide(spec, observation, state, now) -> (Decision, state)``,
  pure, with its windows, schedules and split planning.
- :mod:`autoscaler.simulate` - ``servegate simulate``: the policy against HPA, KPA and an
  oracle on traces.
- :mod:`autoscaler.collector` - the signals on tick into per-pool windows, one
  :class:`~autoscaler.policy.Observation` per pool; :mod:`autoscaler.loop` - the
  collect -> decide -> act loop per pool (injected clock and ticker, activation wake-ups);
- :mod:`autoscaler.actuators` - the actuator port and its adapters (local Triton processes,
  Kubernetes scale subresource with Lease leader election, HPA via metrics), and
  :mod:`autoscaler.keda` - KEDA's external scaler (gRPC);
- :mod:`autoscaler.status` - ``/status``, ``/metrics``, ``POST /activate``,
  ``/pools/{pool}/endpoints``; :mod:`autoscaler.activation` - activations over Redis;
- :mod:`autoscaler.main` - ``servegate autoscaler``: wiring, task group, signals;
  :mod:`autoscaler.settings` - config section -> policy specs; :mod:`autoscaler.cli` - the
  ``autoscaler`` and ``simulate`` subcommands.

The gateway and the autoscaler never import each other; they share :mod:`contracts` (config
schema, the gateway-stats hash schema, metric names), :mod:`router`'s pure decisions and the
:mod:`adapters` (Redis, Kubernetes API, child processes, the config file), and meet through
Redis or HTTP. Only :mod:`servegate.cli` imports both.
"""
