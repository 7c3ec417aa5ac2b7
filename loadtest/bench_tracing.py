#!/usr/bin/env python3
"""Tracing micro-benchmark: what :mod:`gateway.tracing` costs per request.

What it measures (one process, no network, no event loop; best of ``--repeat`` runs):

* ``off``       - ``Tracing(TracingSettings()).begin(...)``, which returns None: ns per call;
* ``unsampled`` - tracing on, the caller's ``traceparent`` says not sampled: ns per ``begin``;
* ``on``        - ``begin`` + 5 marks + ``end`` (6 spans: the SERVER span and 5 phases) into a
  ``BatchSpanProcessor`` whose exporter drops everything: µs per request in the calling thread,
  and the process's CPU µs per request, the batch thread's export work included (measured to the
  last ``force_flush``);
* ``sdk tracer`` - a reference: the same 6 spans made through the SDK's ``TracerProvider`` and
  ``Tracer`` (``start_span`` / ``end`` with explicit times, parent context), the usual way,
  into the same kind of processor.

The batch queue is made large (``OTEL_BSP_MAX_QUEUE_SIZE``) so no span is dropped: a tight loop
gives the export thread the GIL only every switch interval, and a dropped span would make the
numbers look cheaper than they are. Needs the ``tracing`` extra (in ``make venv``).

Usage
    .venv/bin/python loadtest/bench_tracing.py
    .venv/bin/python loadtest/bench_tracing.py --requests 50000 --repeat 7
"""

from __future__ import annotations

import argparse
import os
import time
import timeit
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    set_span_in_context,
)

from gateway.settings import TracingSettings
from gateway.tracing import Tracing

PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED = PARENT[:-2] + b"00"
PHASES = ("auth", "route", "admit", "upstream", "respond")


class NullExporter(SpanExporter):
    """Takes every batch and does nothing with it, counting spans."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def best_ns(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e9


def one_request(tracing: Tracing) -> None:
    trace = tracing.begin("classifier", "http", PARENT, None)
    if trace is not None:
        for phase in PHASES:
            trace.mark(phase)
        trace.end(200, "10.0.0.7:8000", "canary")


def tracer_request(tracer: object, parent_ctx: object) -> None:
    """The same spans through the SDK tracer (for reference)."""
    now = time.time_ns()
    server = tracer.start_span("servegate http classifier", context=parent_ctx,  # type: ignore
                               kind=SpanKind.SERVER, start_time=now,
                               attributes={"servegate.model": "classifier",
                                           "http.response.status_code": 200})
    ctx = set_span_in_context(server)
    for i, phase in enumerate(PHASES):
        tracer.start_span(phase, context=ctx, start_time=now + i).end(  # type: ignore
            end_time=now + i + 1)
    server.end(end_time=now + 10)


def per_request(run: Callable[[], None], flush: Callable[[], object], requests: int,
                repeat: int) -> tuple[float, float]:
    """(µs in the calling thread, process CPU µs incl. the export thread), best of runs."""
    wall, cpu = [], []
    for _ in range(repeat):
        flush()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(requests):
            run()
        t1 = time.perf_counter()
        flush()
        cpu.append((time.process_time() - c0) / requests * 1e6)
        wall.append((t1 - t0) / requests * 1e6)
    return min(wall), min(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(6 * args.requests + 1)

    off = Tracing(TracingSettings())
    ns_off = best_ns(lambda: off.begin("classifier", "http", PARENT, None), 200_000, args.repeat)

    exporter = NullExporter()
    on = Tracing(TracingSettings(enabled=True), exporter=exporter)
    ns_unsampled = best_ns(lambda: on.begin("classifier", "http", UNSAMPLED, None), 200_000,
                           args.repeat)
    us_on, cpu_on = per_request(lambda: one_request(on), on.force_flush, args.requests,
                                args.repeat)
    on.shutdown()
    expected = 6 * args.requests * args.repeat
    dropped = expected - exporter.spans

    ref = NullExporter()
    provider = TracerProvider()
    processor = BatchSpanProcessor(ref)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    parent_ctx = set_span_in_context(NonRecordingSpan(SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True,
        TraceFlags(TraceFlags.SAMPLED))))
    us_ref, cpu_ref = per_request(lambda: tracer_request(tracer, parent_ctx),
                                  processor.force_flush, args.requests, args.repeat)
    provider.shutdown()

    print(f"{'case':<34} {'per request':>14} {'process CPU':>12}")
    print(f"{'off: begin -> None':<34} {ns_off:>11.0f} ns")
    print(f"{'on, unsampled parent: begin':<34} {ns_unsampled:>11.0f} ns")
    print(f"{'on: begin + 5 marks + end':<34} {us_on:>11.1f} µs {cpu_on:>9.1f} µs")
    print(f"{'reference: 6 spans via SDK tracer':<34} {us_ref:>11.1f} µs {cpu_ref:>9.1f} µs")
    print(f"spans exported {exporter.spans} of {expected} ({dropped} dropped)")


if __name__ == "__main__":
    main()
