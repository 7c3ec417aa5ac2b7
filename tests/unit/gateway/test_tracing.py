"""gateway.tracing: spans of a request's phases, None when off or unsampled, the caller's trace
joined, a clear error without the SDK, and a real OTLP/gRPC export."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.errors import TracingUnavailable
from gateway.settings import TracingSettings
from gateway.tracing import RequestTrace, Tracing, parse_traceparent

REPO = Path(__file__).resolve().parents[3]
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN = 0xB7AD6B7169203331
PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PHASES = ("auth", "route", "admit", "cold_wait", "upstream", "respond")


class Clock:
    """Monotonic nanoseconds that move only when told."""

    def __init__(self) -> None:
        self.now = 5_000_000_000

    def __call__(self) -> int:
        return self.now

    def step(self, ns: int) -> None:
        self.now += ns


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter, clock: Clock) -> Iterator[Tracing]:
    t = Tracing(TracingSettings(enabled=True), exporter=exporter, clock=clock)
    yield t
    t.shutdown()


def finished(tracing: Tracing, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert tracing.force_flush(5_000)
    return sorted(exporter.get_finished_spans(), key=lambda s: (s.start_time or 0, s.name))


def split(spans: Sequence[ReadableSpan]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(servers) == 1
    return servers[0], [s for s in spans if s.kind is not SpanKind.SERVER]


def started(tracing: Tracing, traceparent: bytes | None = PARENT,
            tracestate: bytes | None = None, protocol: str = "http") -> RequestTrace:
    trace = tracing.begin("classifier", protocol, traceparent, tracestate)
    assert trace is not None
    return trace


def test_off_begin_is_none_and_shutdown_is_harmless() -> None:
    tracing = Tracing(TracingSettings())
    assert tracing.begin("classifier", "http", PARENT, None) is None
    assert tracing.force_flush()
    tracing.shutdown()


def test_the_gateway_imports_and_builds_tracing_off_without_the_sdk() -> None:
    """The product runs without the ``tracing`` extra: with the SDK unimportable, the server
    module imports and an off Tracing is built; nothing loads the SDK."""
    code = ("import sys\n"
            "sys.modules['opentelemetry.sdk'] = None\n"
            "import gateway.server\n"
            "from gateway.settings import GatewaySettings\n"
            "from gateway.tracing import Tracing\n"
            "t = Tracing(GatewaySettings('x.yaml').tracing)\n"
            "assert t.begin('m', 'http', None, None) is None\n"
            "t.shutdown()\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['opentelemetry.sdk']"  # only the None placeholder


def test_spans_join_the_callers_trace(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    trace = started(tracing, tracestate=b"rojo=00f067aa0ba902b7")
    trace.mark("auth")
    trace.end(200)
    server, children = split(finished(tracing, exporter))
    assert server.context is not None and server.parent is not None
    assert server.name == "servegate http classifier"
    assert server.context.trace_id == TRACE_ID
    assert server.parent.span_id == CALLER_SPAN and server.parent.is_remote
    assert server.context.span_id != CALLER_SPAN
    assert server.context.trace_state.get("rojo") == "00f067aa0ba902b7"
    assert [(c.context.trace_id, c.parent.span_id) for c in children  # type: ignore[union-attr]
            ] == [(TRACE_ID, server.context.span_id)]


def test_an_unsampled_parent_gives_no_trace(tracing: Tracing,
                                            exporter: InMemorySpanExporter) -> None:
    unsampled = PARENT[:-2] + b"00"
    assert tracing.begin("classifier", "http", unsampled, None) is None
    assert finished(tracing, exporter) == []


@pytest.mark.parametrize("header", [
    b"", b"garbage", PARENT.upper(), PARENT[:-1], PARENT + b"-",
    b"ff" + PARENT[2:],                                                   # version ff: invalid
    b"00-00000000000000000000000000000000-b7ad6b7169203331-01",           # zero trace id
    b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",           # zero span id
    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-1-01",           # dash inside
    b"00-0af7651916cd43dd8448eb211c80319c-+7ad6b7169203331-01",           # int() would take it
])
def test_an_invalid_traceparent_is_ignored(header: bytes) -> None:
    assert parse_traceparent(header) is None


def test_a_valid_traceparent_parses_and_a_later_version_may_add_fields() -> None:
    assert parse_traceparent(PARENT) == (TRACE_ID, CALLER_SPAN, 1)
    assert parse_traceparent(b"01" + PARENT[2:] + b"-what-comes-next") == (TRACE_ID,
                                                                           CALLER_SPAN, 1)


def test_without_a_parent_the_trace_is_a_new_root(tracing: Tracing,
                                                  exporter: InMemorySpanExporter) -> None:
    started(tracing, traceparent=b"not-a-traceparent", tracestate=b"ignored=1").end(200)
    started(tracing, traceparent=None).end(200)
    roots = finished(tracing, exporter)
    assert [s.parent for s in roots] == [None, None]
    ids = {s.context.trace_id for s in roots}  # type: ignore[union-attr]
    assert len(ids) == 2 and TRACE_ID not in ids and 0 not in ids
    assert all(len(s.context.trace_state) == 0 for s in roots)  # type: ignore[union-attr]


@pytest.mark.parametrize(("ratio", "low", "high"), [(0.0, 0, 0), (0.25, 850, 1150),
                                                    (1.0, 4000, 4000)])
def test_the_ratio_samples_requests_without_a_parent(ratio: float, low: int, high: int) -> None:
    tracing = Tracing(TracingSettings(enabled=True, sample_ratio=ratio),
                      exporter=InMemorySpanExporter())
    sampled = sum(tracing.begin("m", "http", None, None) is not None for _ in range(4000))
    assert low <= sampled <= high  # 0.25: mean 1000, sd 27
    # A caller's sampled flag wins over the ratio.
    assert tracing.begin("m", "http", PARENT, None) is not None
    tracing.shutdown()


def test_one_child_per_phase_in_order_with_its_duration(
        tracing: Tracing, exporter: InMemorySpanExporter, clock: Clock) -> None:
    begun = clock.now
    trace = started(tracing)
    clock.step(3_000)  # the front door's parse: before the first mark, in no phase
    durations = {}
    for i, phase in enumerate(PHASES):
        trace.mark(phase)
        durations[phase] = (i + 1) * 10_000
        clock.step(durations[phase])
    trace.end(200, "10.0.0.7:8000", variant="canary")
    server, children = split(finished(tracing, exporter))
    assert [c.name for c in children] == list(PHASES)
    assert {c.name: (c.end_time or 0) - (c.start_time or 0) for c in children} == durations
    for before, after in itertools.pairwise(children):
        assert before.end_time == after.start_time
    assert server.start_time is not None and server.end_time is not None
    assert children[0].start_time == server.start_time + 3_000
    assert children[-1].end_time == server.end_time
    assert server.end_time - server.start_time == clock.now - begun
    assert abs(server.end_time - time.time_ns()) < 60 * 10**9  # epoch nanoseconds
    assert server.status.status_code is StatusCode.UNSET
    assert dict(server.attributes or {}) == {
        "servegate.model": "classifier", "servegate.protocol": "http",
        "http.response.status_code": 200, "servegate.endpoint": "10.0.0.7:8000",
        "servegate.variant": "canary"}
    upstream = next(c for c in children if c.name == "upstream")
    assert upstream.kind is SpanKind.CLIENT
    assert dict(upstream.attributes or {}) == {"server.address": "10.0.0.7", "server.port": 8000}
    assert {c.kind for c in children if c.name != "upstream"} == {SpanKind.INTERNAL}


def test_a_repeated_phase_gives_a_span_per_mark_and_none_without_marks(
        tracing: Tracing, exporter: InMemorySpanExporter, clock: Clock) -> None:
    trace = started(tracing)
    for phase in ("upstream", "upstream", "respond"):
        trace.mark(phase)
        clock.step(1_000)
    trace.end(200, "[::1]:8001")
    started(tracing).end(404)
    spans = finished(tracing, exporter)
    names = sorted(s.name for s in spans)
    assert names == ["respond", *["servegate http classifier"] * 2, "upstream", "upstream"]
    assert {s.attributes["server.address"] for s in spans  # type: ignore[index]
            if s.name == "upstream"} == {"::1"}


@pytest.mark.parametrize(("status", "error", "failed", "error_type"), [
    (200, None, False, None), (404, None, False, None), (503, None, True, "503"),
    (502, "UpstreamBroken", True, "UpstreamBroken"), (200, "ShadowMismatch", True,
                                                      "ShadowMismatch")])
def test_an_error_or_a_5xx_fails_the_server_span(
        tracing: Tracing, exporter: InMemorySpanExporter, status: int, error: str | None,
        failed: bool, error_type: str | None) -> None:
    trace = started(tracing)
    trace.mark("upstream")
    trace.end(status, error=error)
    server, (child,) = split(finished(tracing, exporter))
    assert server.status.status_code is (StatusCode.ERROR if failed else StatusCode.UNSET)
    assert (server.attributes or {}).get("error.type") == error_type
    if failed:
        assert server.status.description == error_type
    assert child.status.status_code is StatusCode.UNSET


def test_grpc_calls_say_so(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    started(tracing, protocol="grpc").end(200)
    (server,) = finished(tracing, exporter)
    assert server.name == "servegate grpc classifier"
    assert server.attributes is not None
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["servegate.status_code"] == 200
    assert "http.response.status_code" not in server.attributes


def test_end_is_once(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    trace = started(tracing)
    trace.mark("auth")
    trace.end(200)
    trace.mark("route")
    trace.end(500, error="late")
    assert sorted(s.name for s in finished(tracing, exporter)) == [
        "auth", "servegate http classifier"]


@pytest.mark.parametrize("missing", ["opentelemetry.sdk.trace",
                                     "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"])
def test_tracing_on_without_the_sdk_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                     missing: str) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # import of it raises ImportError
    with pytest.raises(TracingUnavailable, match=r"pip install servegate\[tracing\]"):
        Tracing(TracingSettings(enabled=True, otlp_endpoint="http://127.0.0.1:4317"))


def test_the_cli_turns_tracing_on_and_reports_a_missing_sdk(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from servegate.cli import main

    seen: list[TracingSettings] = []

    def run(settings: Any) -> None:
        seen.append(settings.tracing)
        Tracing(settings.tracing)

    monkeypatch.setattr("gateway.server.run", run)
    assert main(["gateway", "--config", "c.yaml"]) == 0
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    assert main(["gateway", "--config", "c.yaml", "--otlp-endpoint", "http://otel:4317",
                 "--trace-sample-ratio", "0.1"]) == 2
    assert seen == [TracingSettings(),
                    TracingSettings(enabled=True, otlp_endpoint="http://otel:4317",
                                    sample_ratio=0.1)]
    assert "pip install servegate[tracing]" in capsys.readouterr().err


def test_the_sample_ratio_is_a_share() -> None:
    with pytest.raises(ValueError, match="sample_ratio"):
        TracingSettings(sample_ratio=1.5)


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver: what an OpenTelemetry Collector's otlp receiver takes."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.services: set[str] = set()
        self.got = threading.Event()

    def Export(self, request: Any, context: Any) -> Any:  # the gRPC method's name
        for resource_spans in request.resource_spans:
            for attr in resource_spans.resource.attributes:
                if attr.key == "service.name":
                    self.services.add(attr.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                self.names += [span.name for span in scope_spans.spans]
        self.got.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_reach_an_otlp_collector_by_shutdown() -> None:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        tracing = Tracing(TracingSettings(enabled=True, otlp_endpoint=f"http://127.0.0.1:{port}",
                                          service_name="gw-under-test"))
        trace = started(tracing)
        for phase in ("auth", "upstream"):
            trace.mark(phase)
        trace.end(200, "127.0.0.1:8000", variant="v1")
        tracing.shutdown()  # flushes: the export has been answered when this returns
        assert collector.got.wait(10.0)
        assert sorted(collector.names) == ["auth", "servegate http classifier", "upstream"]
        assert collector.services == {"gw-under-test"}
    finally:
        server.stop(None)
