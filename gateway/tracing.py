"""OpenTelemetry spans for the gateway's phases: optional, off by default, free when off.

Where it sits: beside the request path, called from one place in the pipeline.
:class:`gateway.server.Gateway` builds one :class:`Tracing` from
:class:`~gateway.settings.TracingSettings` at start-up and :func:`gateway.server.serve` shuts it
down (flushing what is queued) on exit. Per request the pipeline calls

    trace = tracing.begin(model, protocol, traceparent, tracestate)   # None: do nothing more
    if trace is not None: trace.mark("auth")        # a phase starts; it lasts until the next
    ...                                             # mark, or until end()
    if trace is not None: trace.end(status, endpoint, variant, error)

This is the only gateway module that imports OpenTelemetry, and it imports the SDK only when
tracing is on: the ``tracing`` extra (``pip install servegate[tracing]``) is needed only then,
and a gateway started with tracing on but without it stops at once, saying so.

Cost. Off: ``begin`` returns None and the pipeline does nothing else. On: ``begin`` parses the
``traceparent`` bytes and samples; an unsampled request gets None too, so it costs no more than
that. A sampled one keeps a ``(phase, perf_counter_ns)`` pair per mark and nothing else until
``end``, which builds, in one go, the finished spans as SDK ``ReadableSpan`` values and hands
them to the ``BatchSpanProcessor`` (no tracer, no context switching, no span objects while the
request runs); a background thread exports them over OTLP/gRPC.

Spans. A ``SERVER`` span ``servegate <protocol> <model>`` from ``begin`` to ``end``, and under it
one span per marked phase (``auth``, ``route``, ``admit``, ``cold_wait``, ``upstream``,
``respond``; any name is taken, a repeated one gives one span per mark). Monotonic
``perf_counter_ns`` timestamps become epoch nanoseconds through one offset taken when
:class:`Tracing` is built.

Sampling. A valid incoming ``traceparent`` decides with its sampled flag (OpenTelemetry's
ParentBased rule); without one, ``sample_ratio`` of the requests are traced (TraceIdRatioBased's
rule, applied to the new trace id).

Propagation. The gateway's spans join the caller's trace (the SERVER span's parent is the
caller's span) but the gateway does not propagate its own span upstream: Triton gets the
caller's ``traceparent`` and ``tracestate`` untouched, because the front doors forward the
caller's headers as they came and the hot path rewrites no header. So when Triton traces too,
its spans and the gateway's are siblings under the caller's span, in the same trace.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.errors import TracingUnavailable
from gateway.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import TraceState
    from opentelemetry.trace.status import Status

__all__ = ["RequestTrace", "Tracing", "parse_traceparent"]

INSTALL_HINT = "pip install servegate[tracing]"
_HEX_AND_DASH = b"0123456789abcdef-"
_LOW64 = (1 << 64) - 1
# Per the semantic conventions: a server span is an error on a 5xx, not on a 4xx.
_SERVER_ERROR = 500


def parse_traceparent(value: bytes) -> tuple[int, int, int] | None:
    """``(trace_id, parent_span_id, flags)`` from a W3C ``traceparent`` header, or None when it
    is not a valid one (then the request is treated as having no parent)."""
    head = value[:55]
    if (len(head) != 55 or head[2] != 45 or head[35] != 45 or head[52] != 45  # 45: "-"
            or head.count(b"-") != 3 or head.translate(None, _HEX_AND_DASH)):
        return None
    version = head[:2]
    if version == b"ff" or (len(value) > 55 and (version == b"00" or value[55] != 45)):
        return None
    trace_id, span_id = int(head[3:35], 16), int(head[36:52], 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(head[53:55], 16)


class RequestTrace:
    """One sampled request's timeline, turned into spans by :meth:`end`."""

    __slots__ = ("_clock", "_marks", "_parent", "_start_ns", "_trace_id", "_tracestate",
                 "_tracing", "model", "protocol")

    def __init__(self, tracing: Tracing, model: str, protocol: str, trace_id: int,
                 parent: tuple[int, int] | None, tracestate: bytes | None) -> None:
        self._tracing = tracing
        self._clock = clock = tracing.clock
        self.model = model
        self.protocol = protocol
        self._trace_id = trace_id
        self._parent = parent  # (span id, flags) of the caller's span
        self._tracestate = tracestate
        self._start_ns = clock()
        self._marks: list[tuple[str, int]] | None = []

    def mark(self, phase: str) -> None:
        """``phase`` starts now; the one before it (if any) ends now."""
        if self._marks is not None:
            self._marks.append((phase, self._clock()))

    def end(self, status: int, endpoint: str = "", variant: str | None = None,
            error: str | None = None) -> None:
        """The request is answered: build and queue its spans (once; later calls do nothing).

        ``status`` is the HTTP status the gateway records for the call (for gRPC, the one its
        metrics record), ``endpoint`` the Triton ``host:port`` it went to, ``error`` a short
        error kind (e.g. an exception's class name); a 5xx or an error marks the span failed."""
        marks, self._marks = self._marks, None
        if marks is not None:
            self._tracing._export(self, marks, self._clock(), status, endpoint,
                                  variant, error)


class Tracing:
    """The gateway's tracer: off (every ``begin`` is None) unless ``settings.enabled``.

    ``exporter`` replaces the OTLP exporter (tests pass an in-memory one); spans still go
    through a ``BatchSpanProcessor``, so they reach it on :meth:`force_flush` or
    :meth:`shutdown` at the latest. ``clock`` gives monotonic nanoseconds (tests step it)."""

    def __init__(self, settings: TracingSettings, exporter: SpanExporter | None = None,
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self.clock = clock
        # TraceIdRatioBased's bound on the low 64 bits of a new trace id.
        self._bound = round(settings.sample_ratio * (1 << 64))
        self._epoch_offset_ns = time.time_ns() - clock()
        self._sdk = _Sdk(settings, exporter) if settings.enabled else None

    def begin(self, model: str, protocol: str, traceparent: bytes | None,
              tracestate: bytes | None) -> RequestTrace | None:
        """A request arrived: its trace, or None when tracing is off or it is not sampled."""
        if self._sdk is None:
            return None
        parent = parse_traceparent(traceparent) if traceparent else None
        if parent is not None:
            trace_id, span_id, flags = parent
            if not flags & 1:
                return None
            return RequestTrace(self, model, protocol, trace_id, (span_id, flags), tracestate)
        trace_id = random.getrandbits(128) or 1
        if trace_id & _LOW64 >= self._bound:
            return None
        return RequestTrace(self, model, protocol, trace_id, None, None)

    def force_flush(self, timeout_ms: int = 30_000) -> bool:
        """Export every queued span now; False if that did not finish within ``timeout_ms``."""
        return self._sdk.processor.force_flush(timeout_ms) if self._sdk is not None else True

    def shutdown(self) -> None:
        """Flush what is queued and stop the exporter (the server calls this on exit)."""
        if self._sdk is not None:
            self._sdk.processor.shutdown()

    def _export(self, trace: RequestTrace, marks: list[tuple[str, int]], end_ns: int,
                status: int, endpoint: str, variant: str | None, error: str | None) -> None:
        sdk = self._sdk
        if sdk is None:  # pragma: no cover - begin() gives no trace while off
            return
        offset = self._epoch_offset_ns
        trace_id, state = trace._trace_id, sdk.trace_state(trace._tracestate)
        caller = (None if trace._parent is None else
                  sdk.SpanContext(trace_id, trace._parent[0], True, sdk.TraceFlags(
                      trace._parent[1]), state))
        server = sdk.SpanContext(trace_id, _span_id(), False, sdk.sampled, state)
        attributes: dict[str, Any] = {"servegate.model": trace.model,
                                      "servegate.protocol": trace.protocol}
        if trace.protocol == "grpc":
            attributes["rpc.system"] = "grpc"
            attributes["servegate.status_code"] = status
        else:
            attributes["http.response.status_code"] = status
        if endpoint:
            attributes["servegate.endpoint"] = endpoint
        if variant:
            attributes["servegate.variant"] = variant
        failed = error is not None or status >= _SERVER_ERROR
        if failed:
            attributes["error.type"] = error or str(status)
        span = sdk.ReadableSpan
        emit = sdk.processor.on_end
        for i, (phase, start) in enumerate(marks):
            stop = marks[i + 1][1] if i + 1 < len(marks) else end_ns
            upstream = phase == "upstream"
            emit(span(phase, sdk.SpanContext(trace_id, _span_id(), False, sdk.sampled, state),
                      server, sdk.resource, _server_address(endpoint) if upstream else None,
                      kind=sdk.client if upstream else sdk.internal,
                      instrumentation_scope=sdk.scope, start_time=start + offset,
                      end_time=stop + offset))
        emit(span(f"servegate {trace.protocol} {trace.model}", server, caller, sdk.resource,
                  attributes, kind=sdk.server, instrumentation_scope=sdk.scope,
                  status=sdk.error(error or str(status)) if failed else sdk.unset,
                  start_time=trace._start_ns + offset, end_time=end_ns + offset))


def _span_id() -> int:
    return random.getrandbits(64) or 1


def _server_address(endpoint: str) -> dict[str, Any] | None:
    """``server.address`` / ``server.port`` of the upstream span from ``host:port``."""
    if not endpoint:
        return None
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        return {"server.address": endpoint}
    return {"server.address": host.strip("[]"), "server.port": int(port)}


class _Sdk:
    """The OpenTelemetry SDK pieces, imported and built only when tracing is on."""

    def __init__(self, settings: TracingSettings, exporter: SpanExporter | None) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import ReadableSpan
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
            from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState
            from opentelemetry.trace.status import Status, StatusCode

            if exporter is None:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )

                exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint)
        except ImportError as exc:
            raise TracingUnavailable(
                f"tracing is on (--otlp-endpoint) but the OpenTelemetry SDK is not installed "
                f"({exc.name or exc}): {INSTALL_HINT}, or start without --otlp-endpoint"
            ) from exc
        from gateway import __version__

        self.ReadableSpan = ReadableSpan
        self.SpanContext = SpanContext
        self.TraceFlags = TraceFlags
        self._TraceState = TraceState
        self._Status, self._StatusCode = Status, StatusCode
        self.sampled = TraceFlags(TraceFlags.SAMPLED)
        self.server, self.client, self.internal = (SpanKind.SERVER, SpanKind.CLIENT,
                                                   SpanKind.INTERNAL)
        self.unset = Status(StatusCode.UNSET)
        self.resource = Resource.create({"service.name": settings.service_name})
        self.scope = InstrumentationScope("servegate.gateway", __version__)
        self.processor: SpanProcessor = BatchSpanProcessor(exporter)
        self._no_state = TraceState()

    def trace_state(self, header: bytes | None) -> TraceState:
        if not header:
            return self._no_state
        return self._TraceState.from_header([header.decode("latin-1")])

    def error(self, description: str) -> Status:
        return self._Status(self._StatusCode.ERROR, description)
