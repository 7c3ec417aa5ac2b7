"""Actuators: apply a pool's decided size (see :mod:`autoscaler.actuators.base`).

``local`` (Triton processes), ``kubernetes`` (scale subresource, with Lease leader election
in :mod:`.lease`), ``keda`` (:mod:`autoscaler.keda.server`), ``hpa`` and ``none`` (publish
only). Modules are imported by the command that needs them, so ``--actuator local`` loads no
Kubernetes or gRPC code.
"""

from autoscaler.actuators.base import Actuator, ExportedActuator, ReadyCounter

__all__ = ["Actuator", "ExportedActuator", "ReadyCounter"]
