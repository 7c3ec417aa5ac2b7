"""Errors raised by the adapters, one tree; each adapter translates its library's errors here.

    AdapterError
     ├── ProcessStartError    a child process did not come up (exited, or not ready in time)
     ├── RedisFailed          a Redis call failed (a refused command, a broken reply)
     │    └── RedisUnavailable    unreachable, connection lost, timed out: try again later
     └── KubernetesError      the Kubernetes API refused or failed a call (status, reason)
          ├── KubernetesUnavailable   transport failure, timeout, 5xx, 429: try again later
          ├── KubernetesForbidden     401 / 403: credentials or RBAC fall short
          ├── KubernetesNotFound      404: no such object
          ├── KubernetesConflict      409: someone else wrote first (lease races)
          └── KubernetesGone          410: a watch's resourceVersion is too old: list again

Where it sits: below both processes. The gateway turns these into its own tree at the edge of
the adapter (``gateway.errors.DiscoveryError``); the autoscaler re-exports them from
``autoscaler.errors`` and wraps failures of a target in its ``ActuatorError``.
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base of every error raised by :mod:`adapters`."""


class KubernetesError(AdapterError):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, what: str, message: str, status: int = 0, reason: str = "") -> None:
        self.what = what
        self.status = status
        self.reason = reason
        super().__init__(f"{what}: {message}")


class KubernetesUnavailable(KubernetesError):
    """No answer, a timeout, 429 or a 5xx: worth trying again later."""


class KubernetesForbidden(KubernetesError):
    """401 or 403: the credentials or the RBAC rules do not allow the call."""


class KubernetesNotFound(KubernetesError):
    """404: the object (or its resource) does not exist."""


class KubernetesConflict(KubernetesError):
    """409: the object changed since it was read, or already exists."""


class KubernetesGone(KubernetesError):
    """410: the resourceVersion a watch asked for is too old; list again."""


class RedisFailed(AdapterError):
    """A Redis call failed (a refused command, a broken reply); ``what`` names the call."""

    def __init__(self, what: str, message: str) -> None:
        self.what = what
        super().__init__(f"Redis {what}: {message}")


class RedisUnavailable(RedisFailed):
    """Redis did not answer: unreachable, connection lost or timed out. Try again later."""


class ProcessStartError(AdapterError):
    """A child process exited, or did not report ready, before its deadline; ``name`` names
    it and the message carries the tail of its output."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{name}: {message}")
