#!/usr/bin/env python3
"""Workers benchmark: gateway throughput with ``--workers 1`` vs ``--workers 2``.

What it measures
    The upstream must not be the bottleneck, so it is not Triton but nginx answering every
    ``POST /v2/models/<m>/infer`` with a fixed small V2 JSON body (and 200 on
    ``/v2/health/ready`` and ``/v2/health/live``, which the gateway's prober asks). For each
    worker count the gateway is started (``--grpc-port 0``), a warm-up ``wrk`` run is
    discarded, then ``wrk`` (closed loop, keep-alive connections, the small JSON infer body of
    ``bench_overhead.py``) measures requests/s and p50/p99. CPU per request is the gateway's
    total user + system CPU during the run (the parent and every worker, from psutil) divided
    by the requests wrk completed. ``--repeat N`` runs each cell N times, interleaved, and
    reports medians.

    wrk, nginx and the gateway share one machine: on 2 cores two workers compete with wrk
    and nginx for the same CPUs, so the ratio shows what a second worker buys there, not on
    a pod with dedicated cores.

Usage
    .venv/bin/python loadtest/bench_workers.py                       # 1 vs 2 workers, 5 s
    .venv/bin/python loadtest/bench_workers.py --duration 3 --workers 1,2,4 --repeat 3

Results: a table on stdout and JSON in ``--out`` (default ``loadtest/results/workers.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_overhead import (
    Target,
    run_wrk,
    small_body,
    spawn,
    verify,
    wait_ready,
    wait_until,
    write_wrk_script,
)
from prometheus_client.parser import text_string_to_metric_families

from servegate.local.launch import free_port

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "loadtest" / "results" / "workers.json"

FAKE_TRITON_CONF = """\
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path tmp/body;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location = /v2/health/ready {{ return 200 ""; }}
        location = /v2/health/live {{ return 200 ""; }}
        location ~ ^/v2/models/[^/]+/infer$ {{
            return 200 '{body}';
        }}
    }}
}}
"""
ANSWER = json.dumps({"model_name": "classifier", "model_version": "1", "outputs": [
    {"name": "OUTPUT", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]},
    separators=(",", ":"))


def start_fake_triton(workdir: Path) -> Target:
    """nginx answering V2 infer calls with a fixed body: an upstream that costs ~nothing."""
    prefix = workdir / "fake-triton"
    (prefix / "tmp").mkdir(parents=True)
    port = free_port()
    (prefix / "nginx.conf").write_text(FAKE_TRITON_CONF.format(port=port, body=ANSWER))
    binary = shutil.which("nginx") or "nginx"
    target = spawn("fake-triton", [binary, "-p", f"{prefix}/", "-e", "error.log", "-c",
                                   "nginx.conf", "-g", "daemon off;"], workdir, port)
    target.log = prefix / "error.log"
    wait_ready(target, f"http://{target.address}/v2/health/ready")
    return target


def start_gateway(upstream: str, workers: int, workdir: Path) -> Target:
    workdir.mkdir(parents=True)
    config = workdir / "gateway.yaml"
    config.write_text(f'pools:\n  bench:\n    endpoints: ["{upstream}"]\n'
                      "models:\n  classifier: {pool: bench}\n")
    port = free_port()
    target = spawn(f"gateway-w{workers}", [
        sys.executable, "-m", "servegate.cli", "gateway", "--config", str(config),
        "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", "0",
        "--log-level", "warning", "--workers", str(workers)], workdir, port)
    wait_ready(target, f"http://{target.address}/v2/health/ready")
    if workers > 1:  # every worker serving, not just the first that answers
        assert target.proc is not None
        proc = target.proc
        wait_until(lambda: _workers_serving(target.address) == workers,
                   f"{workers} gateway workers", alive=lambda: proc.poll() is None)
    return target


def _workers_serving(address: str) -> int:
    """Workers whose metrics a scrape sums, 0 while any is missing."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0
    values = {f.name: f.samples[0].value for f in text_string_to_metric_families(text)
              if f.name in ("servegate_metrics_workers", "servegate_metrics_workers_missing")}
    if values.get("servegate_metrics_workers_missing", 1) != 0:
        return 0
    return int(values.get("servegate_metrics_workers", 0))


@dataclass
class Cell:
    workers: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us_per_request: float


def measure(gw: Target, script: Path, args: argparse.Namespace) -> Cell:
    url = f"http://{gw.address}/v2/models/classifier/infer"
    run_wrk(url, script, args.connections, args.threads, min(args.duration, 2.0))  # warm-up
    cpu0 = gw.cpu_seconds()
    result = run_wrk(url, script, args.connections, args.threads, args.duration)
    cpu = gw.cpu_seconds() - cpu0
    workers = int(gw.name.rsplit("-w", 1)[1])
    return Cell(workers, result.rps, result.p50_ms, result.p99_ms, result.requests,
                result.errors, cpu / max(result.requests, 1) * 1e6)


def median_cell(cells: list[Cell]) -> Cell:
    def med(attr: str) -> float:
        return statistics.median(getattr(c, attr) for c in cells)

    return Cell(cells[0].workers, med("rps"), med("p50_ms"), med("p99_ms"),
                int(med("requests")), int(med("errors")), med("cpu_us_per_request"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2", help="worker counts to compare (first = base)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    body = small_body()
    runs: dict[int, list[Cell]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        workdir = Path(tmp)
        script = write_wrk_script(body, workdir)
        upstream = start_fake_triton(workdir)
        try:
            for _ in range(args.repeat):
                for n in counts:
                    gw = start_gateway(upstream.address, n, workdir / f"w{n}-{time.time_ns()}")
                    try:
                        verify(gw.address, body)
                        runs[n].append(measure(gw, script, args))
                    finally:
                        gw.stop()
        finally:
            upstream.stop()
    cells = [median_cell(runs[n]) for n in counts]
    base = cells[0].rps
    print(f"gateway workers, small JSON infer, fake upstream (nginx), c={args.connections}, "
          f"{args.duration:g}s x {args.repeat}, {os.cpu_count()} CPUs")
    print(f"{'workers':>7} {'req/s':>9} {'vs base':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU us/req':>10} {'errors':>6}")
    for c in cells:
        print(f"{c.workers:>7} {c.rps:>9.0f} {c.rps / base:>7.2f}x {c.p50_ms:>7.2f} "
              f"{c.p99_ms:>7.2f} {c.cpu_us_per_request:>10.0f} {c.errors:>6}")
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()},
        "cells": [asdict(c) for c in cells], "runs": {n: [asdict(c) for c in r]
                                                      for n, r in runs.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
