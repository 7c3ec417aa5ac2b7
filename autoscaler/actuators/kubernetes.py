"""The Kubernetes actuator: a pool is a Deployment; its size is the scale subresource.

Where it sits: behind the :class:`~autoscaler.actuators.base.Actuator` port for
``servegate autoscaler --actuator kubernetes`` (REFERENCE §7, "Scale subresource"). Each pool
maps to a Deployment (``autoscaling.pools.<pool>.kubernetes: {deployment, namespace}``;
default: the pool's name in the autoscaler's namespace).

- :meth:`ScaleActuator.current` - ``GET .../deployments/{name}/scale`` -> ``spec.replicas``;
- :meth:`ScaleActuator.ready` - ``GET .../deployments/{name}`` -> ``status.readyReplicas``;
- :meth:`ScaleActuator.scale` - reads the scale and, only if it differs,
  ``PATCH .../deployments/{name}/scale`` with ``{"spec": {"replicas": N}}`` as
  ``application/merge-patch+json``.

Every failure is an :class:`~autoscaler.errors.ActuatorError` naming ``namespace/deployment``
with the :class:`~autoscaler.errors.KubernetesError` chained. With several autoscaler
replicas, only the Lease holder acts (:mod:`autoscaler.actuators.lease`); the others keep
collecting and deciding, and take over when the leader's lease expires.

Minimal RBAC for the autoscaler's ServiceAccount (namespace of the Deployments; the Lease
rule in the autoscaler's own namespace)::

    apiVersion: rbac.authorization.k8s.io/v1
    kind: Role
    metadata: {name: servegate-autoscaler}
    rules:
      - apiGroups: ["apps"]
        resources: ["deployments/scale"]
        verbs: ["get", "patch"]            # add "update" only for clients that PUT the Scale
      - apiGroups: ["apps"]
        resources: ["deployments"]
        verbs: ["get"]                     # status.readyReplicas
      - apiGroups: ["coordination.k8s.io"]
        resources: ["leases"]
        verbs: ["get", "create", "patch"]  # leader election (--leader-elect)
    ---
    apiVersion: rbac.authorization.k8s.io/v1
    kind: RoleBinding
    metadata: {name: servegate-autoscaler}
    roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: servegate-autoscaler}
    subjects: [{kind: ServiceAccount, name: servegate-autoscaler}]

Keep ``spec.replicas`` out of the Deployment manifest you apply (or Helm/Argo will fight the
autoscaler), exactly as with an HPA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.kube import KubeClient
from autoscaler.errors import ActuatorError, KubernetesError


@dataclass(frozen=True, slots=True)
class DeploymentRef:
    namespace: str
    name: str

    @property
    def path(self) -> str:
        return f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.name}"

    def __str__(self) -> str:
        return f"deployment {self.namespace}/{self.name}"


def _replicas(doc: Mapping[str, Any], section: str, key: str) -> int:
    value = (doc.get(section) or {}).get(key)
    return int(value) if isinstance(value, int | float) else 0


class ScaleActuator:
    """Reads and patches each pool's Deployment through its scale subresource."""

    def __init__(self, client: KubeClient, targets: Mapping[str, DeploymentRef]) -> None:
        self.client = client
        self.targets = dict(targets)
        self.patches = 0

    def _target(self, pool: str) -> DeploymentRef:
        try:
            return self.targets[pool]
        except KeyError:
            raise ActuatorError(f"pool {pool!r}", "no Deployment configured") from None

    async def current(self, pool: str) -> int:
        target = self._target(pool)
        try:
            scale = await self.client.get(target.path + "/scale")
        except KubernetesError as exc:
            raise ActuatorError(str(target), f"cannot read the scale: {exc}") from exc
        return _replicas(scale, "spec", "replicas")

    async def ready(self, pool: str) -> int:
        target = self._target(pool)
        try:
            deployment = await self.client.get(target.path)
        except KubernetesError as exc:
            raise ActuatorError(str(target), f"cannot read the status: {exc}") from exc
        return _replicas(deployment, "status", "readyReplicas")

    async def scale(self, pool: str, replicas: int) -> None:
        if await self.current(pool) == replicas:
            return
        target = self._target(pool)
        try:
            await self.client.merge_patch(target.path + "/scale",
                                          {"spec": {"replicas": replicas}})
        except KubernetesError as exc:
            raise ActuatorError(str(target), f"cannot scale to {replicas}: {exc}") from exc
        self.patches += 1
