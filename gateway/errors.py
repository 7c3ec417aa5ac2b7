"""The gateway's exception tree. Third-party errors are translated into it at the adapter
that calls the library (``raise ... from exc``); status codes are chosen in one place per
protocol: :mod:`gateway.http.errors` (HTTP) and :mod:`gateway.grpc.errors` (gRPC).

    GatewayError
     ├── ClientError                  the request is wrong; nothing was sent upstream
     │    ├── BadRequest              400
     │    ├── Unauthorized            401 (no credentials)
     │    ├── Forbidden               403 (wrong credentials, or not allowed)
     │    ├── NotFound                404  (unknown route)
     │    ├── MethodNotAllowed        405
     │    ├── RequestTimeout          408 (the request did not arrive within its deadline)
     │    └── PayloadTooLarge         413
     ├── Unsupported                  501 (e.g. model load/unload through the gateway)
     ├── Unavailable                  503 + Retry-After (no admitted endpoint in the pool)
     ├── Overloaded                   429 + Retry-After: a tenant's quota, a model's in-flight
     │                                cap, or shedding by priority (``reason`` says which)
     ├── UpstreamStatus               gRPC: the endpoint answered with a non-OK status; passed
     │                                through to the client as it came (code and details); not a
     │                                transport failure, so it does not count against health
     ├── StateStoreError              the shared state store (Redis) failed; callers keep
     │                                serving with the last known state
     ├── DiscoveryError               endpoint discovery failed (the local actuator, or the
     │                                Kubernetes API); the pool keeps its last known endpoints
     ├── TracingUnavailable           start-up: tracing is on but the OpenTelemetry SDK (the
     │                                ``tracing`` extra) is not installed
     └── UpstreamError                the call to a Triton endpoint failed
          ├── UpstreamConnectError    could not connect: the request never left (retry-safe)
          ├── UpstreamTimeout         504: no complete response within the read deadline
          └── UpstreamBroken          502: connection reset or unparsable response after send

Router errors (:class:`router.UnknownModel`, :class:`router.NoEndpoint`) are mapped alongside.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ClientError(GatewayError):
    pass


class BadRequest(ClientError):
    pass


class Unauthorized(ClientError):
    pass


class Forbidden(ClientError):
    pass


class NotFound(ClientError):
    pass


class MethodNotAllowed(ClientError):
    def __init__(self, allowed: str) -> None:
        self.allowed = allowed
        super().__init__("Method Not Allowed")


class RequestTimeout(ClientError):
    def __init__(self, timeout_s: float, part: str = "request body") -> None:
        self.timeout_s = timeout_s
        super().__init__(f"the {part} did not arrive within {timeout_s:g} s")


class PayloadTooLarge(ClientError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"request body exceeds the limit of {limit} bytes")


class Unsupported(GatewayError):
    pass


class Unavailable(GatewayError):
    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class Overloaded(GatewayError):
    """Admission said no; ``reason`` is ``rate``, ``concurrency``, ``max_in_flight`` or
    ``shed`` (the label of the rejection counter)."""

    def __init__(self, message: str, reason: str, retry_after_s: int = 1) -> None:
        self.reason = reason
        self.retry_after_s = retry_after_s
        super().__init__(message)


class UpstreamStatus(GatewayError):
    """A gRPC status an endpoint answered with; ``code`` is the ``grpc.StatusCode`` name."""

    def __init__(self, endpoint: str, code: str, details: str) -> None:
        self.endpoint = endpoint
        self.code = code
        self.details = details
        super().__init__(details)


class StateStoreError(GatewayError):
    pass


class DiscoveryError(GatewayError):
    pass


class TracingUnavailable(GatewayError):
    """Tracing was asked for, but ``opentelemetry-sdk`` (or its OTLP exporter) is missing."""


class UpstreamError(GatewayError):
    """A transport-level failure talking to one endpoint (``endpoint`` is ``host:port``)."""

    kind = "error"

    def __init__(self, endpoint: str, detail: str) -> None:
        self.endpoint = endpoint
        self.detail = detail
        super().__init__(f"upstream {endpoint}: {detail}")


class UpstreamConnectError(UpstreamError):
    kind = "connect"


class UpstreamTimeout(UpstreamError):
    kind = "timeout"


class UpstreamBroken(UpstreamError):
    kind = "broken"
