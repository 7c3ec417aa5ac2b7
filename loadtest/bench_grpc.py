#!/usr/bin/env python3
"""gRPC overhead benchmark: Triton's gRPC directly vs through the servegate gateway.

What it measures
    One Triton worker (the demo ``classifier``) and one gateway in front of it are started.
    The same client then drives each target, cell by cell: a ``grpc.aio`` client (uvloop)
    sending the bytes of one prebuilt ``ModelInferRequest`` (``INPUT`` FP32 [1,16] in
    ``raw_input_contents``) to ``/inference.GRPCInferenceService/ModelInfer`` with no
    (de)serialization on the client side, from N concurrent workers over one channel, each
    sending its next request as soon as the previous answer arrives (closed loop), for a fixed
    duration after a discarded warm-up. Every latency is recorded. With ``--rpc stream`` the
    same request goes over ModelStreamInfer instead: each worker holds one bidirectional stream
    for the whole cell and sends its next request on it when the previous response arrives.

    Per cell: requests/s, p50 and p99 latency; for the gateway the throughput ratio against
    direct, the latency it adds at p50 and p99, and its CPU time (user + system of the gateway
    process, from psutil) divided by the requests completed: microseconds of CPU per request.

    Client, Triton and gateway share one machine, so absolute numbers depend on its cores;
    the ratio and the gateway's CPU per request are the comparable figures.

Usage
    .venv/bin/python loadtest/bench_grpc.py
    .venv/bin/python loadtest/bench_grpc.py --duration 5 --concurrency 16,64 --repeat 3
    .venv/bin/python loadtest/bench_grpc.py --rpc unary,stream --concurrency 64

Results: a table on stdout and JSON in ``--out`` (default ``loadtest/results/grpc.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
from tritonclient.grpc import service_pb2 as pb

from servegate.local.launch import free_port, start_triton

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "loadtest" / "results" / "grpc.json"
INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
RPCS = ("unary", "stream")
READY_TIMEOUT_S = 30.0


def infer_request() -> bytes:
    """ModelInferRequest for ``classifier``: INPUT FP32 [1,16], tensor bytes in raw contents."""
    request = pb.ModelInferRequest(model_name="classifier", id="bench")
    request.inputs.add(name="INPUT", datatype="FP32", shape=[1, 16])  # data: raw contents
    data = np.random.default_rng(16).normal(0, 1, (1, 16)).astype("<f4")
    request.raw_input_contents.append(data.tobytes())
    return request.SerializeToString()


# --------------------------------------------------------------------------- the gateway


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    grpc_address: str
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU of the gateway process and its live descendants."""
        root = psutil.Process(self.proc.pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_gateway(http: str, grpc_address: str, workdir: Path,
                  extra_args: Sequence[str]) -> Gateway:
    config = workdir / "gateway.yaml"
    config.write_text(
        "pools:\n"
        "  bench:\n"
        f'    endpoints: [{{http: "{http}", grpc: "{grpc_address}"}}]\n'
        "models:\n"
        "  classifier: {pool: bench}\n"
    )
    http_port, grpc_port = free_port(), free_port()
    log = workdir / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "servegate.cli", "gateway", "--config", str(config),
             "--host", "127.0.0.1", "--http-port", str(http_port),
             "--grpc-port", str(grpc_port), *extra_args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=REPO)
    gw = Gateway(proc, f"127.0.0.1:{grpc_port}", log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    url = f"http://127.0.0.1:{http_port}/v2/health/ready"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{gw.log_tail()}")
        with contextlib.suppress(OSError, urllib.error.URLError), \
                urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return gw
        time.sleep(0.1)
    gw.stop()
    raise RuntimeError(f"gateway not ready after {READY_TIMEOUT_S:.0f}s:\n{gw.log_tail()}")


# --------------------------------------------------------------------------- the client


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    seconds: float
    cpu_s: float | None = None

    @property
    def cpu_us_per_req(self) -> float | None:
        if self.cpu_s is None or not self.requests:
            return None
        return self.cpu_s / self.requests * 1e6


async def closed_loop(address: str, raw: bytes, concurrency: int, seconds: float) -> Run:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(INFER)  # bytes in, bytes out
        await call(raw, timeout=10)
        start = time.perf_counter()
        stop_at = start + seconds

        async def worker() -> None:
            nonlocal errors
            while (t0 := time.perf_counter()) < stop_at:
                try:
                    await call(raw, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return _run(address, latencies, errors, elapsed)


def _run(address: str, latencies: list[float], errors: int, elapsed: float) -> Run:
    if not latencies:
        raise RuntimeError(f"{address}: no request succeeded ({errors} errors)")
    q = np.percentile(np.array(latencies) * 1000, [50, 99])
    return Run(len(latencies) / elapsed, float(q[0]), float(q[1]), len(latencies), errors,
               elapsed)


async def closed_loop_stream(address: str, raw: bytes, concurrency: int,
                             seconds: float) -> Run:
    """ModelStreamInfer: each worker holds one stream and sends its next request on it as
    soon as the previous response arrives."""
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        open_stream = channel.stream_stream(STREAM_INFER)  # bytes in, bytes out
        start = time.perf_counter()
        stop_at = start + seconds

        async def worker() -> None:
            nonlocal errors
            call = open_stream(timeout=seconds + 30)
            try:
                while (t0 := time.perf_counter()) < stop_at:
                    await call.write(raw)
                    reply = pb.ModelStreamInferResponse.FromString(await call.read())
                    if reply.error_message:
                        if not errors:
                            print(f"\n    first error: {reply.error_message}", file=sys.stderr)
                        errors += 1
                        continue
                    latencies.append(time.perf_counter() - t0)
                await call.done_writing()
                while await call.read() is not grpc.aio.EOF:
                    pass
            except grpc.aio.AioRpcError as exc:
                if not errors:
                    print(f"\n    stream ended: {exc.code()} {exc.details()}", file=sys.stderr)
                errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return _run(address, latencies, errors, elapsed)


def measure(address: str, raw: bytes, concurrency: int, args: argparse.Namespace,
            cpu: Callable[[], float] | None, rpc: str = "unary") -> Run:
    loop = closed_loop_stream if rpc == "stream" else closed_loop
    if args.warmup > 0:
        _run_loop(loop(address, raw, concurrency, args.warmup))
    cpu0 = cpu() if cpu else 0.0
    run = _run_loop(loop(address, raw, concurrency, args.duration))
    if cpu is not None:
        run.cpu_s = cpu() - cpu0
    return run


def _run_loop(coro: Any) -> Run:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)  # type: ignore[no-any-return]
    return uvloop.run(coro)  # type: ignore[no-any-return]


def verify(direct: str, gateway: str, raw: bytes) -> None:
    """Both targets answer the same bytes (the gateway passes the response through)."""
    answers = []
    for address in (direct, gateway):
        with grpc.insecure_channel(address) as channel:
            answers.append(channel.unary_unary(INFER)(raw, timeout=10))
    response = pb.ModelInferResponse.FromString(answers[0])
    if answers[0] != answers[1] or response.model_name != "classifier":
        raise RuntimeError("direct and gateway answers differ")


# --------------------------------------------------------------------------- report


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: Sequence[Run], base: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rps": _median([r.rps for r in runs]),
        "p50_ms": _median([r.p50_ms for r in runs]),
        "p99_ms": _median([r.p99_ms for r in runs]),
        "requests": sum(r.requests for r in runs),
        "errors": sum(r.errors for r in runs),
        "runs": [{**asdict(r), "cpu_us_per_req": r.cpu_us_per_req} for r in runs],
    }
    if base is not None:
        out.update(
            throughput_ratio=out["rps"] / base["rps"],
            added_p50_ms=out["p50_ms"] - base["p50_ms"],
            added_p99_ms=out["p99_ms"] - base["p99_ms"],
            cpu_us_per_req=_median([r.cpu_us_per_req for r in runs]),
        )
    return out


def print_table(cells: Sequence[dict[str, Any]]) -> None:
    head = (f"{'rpc':7}{'conc':>5}  {'target':8}{'req/s':>9}{'ratio':>7}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'+p50':>8}{'+p99':>8}{'CPU us/req':>12}{'err':>5}")
    print("\n" + head + "\n" + "-" * len(head))
    for cell in cells:
        for name in ("direct", "gateway"):
            r = cell[name]

            def fmt(key: str, spec: str, r: dict[str, Any] = r) -> str:
                value = r.get(key)
                return "-" if value is None else format(value, spec)

            print(f"{cell.get('rpc', 'unary'):7}{cell['concurrency']:>5}  {name:8}"
                  f"{r['rps']:>9.0f}"
                  f"{fmt('throughput_ratio', '.2f'):>7}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                  f"{fmt('added_p50_ms', '+.2f'):>8}{fmt('added_p99_ms', '+.2f'):>8}"
                  f"{fmt('cpu_us_per_req', '.0f'):>12}{r['errors']:>5}")
        print()


def metadata(args: argparse.Namespace) -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True)
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv],
        "host": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                 "python": platform.python_version()},
        "versions": {"servegate": version("servegate"), "grpcio": version("grpcio"),
                     "nvidia-pytriton": version("nvidia-pytriton"),
                     "git_commit": commit.stdout.strip() or None},
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup,
                     "repeat": args.repeat, "concurrency": args.concurrency,
                     "client": "grpc.aio + uvloop, one channel, raw request bytes",
                     "request": "classifier INPUT FP32 [1,16] in raw_input_contents",
                     "gateway_args": args.gateway_arg},
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per cell")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded warm-up")
    p.add_argument("--concurrency", default="16,64",
                   type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                   help="concurrent client workers, comma-separated (default 16,64)")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is reported")
    p.add_argument("--rpc", default="unary",
                   type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   help="comma-separated subset of: unary (ModelInfer), stream "
                        "(ModelStreamInfer: one stream per worker, closed loop on it)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--gateway-arg", action="append", default=[],
                   help="extra argument for the gateway command line (repeatable)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raw = infer_request()
    print("starting Triton (classifier) ...", flush=True)
    triton = start_triton(models=("classifier",))
    gateway = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-grpc-") as tmp:
            print("starting the gateway ...", flush=True)
            gateway = start_gateway(triton.http, triton.grpc, Path(tmp), args.gateway_arg)
            verify(triton.grpc, gateway.grpc_address, raw)
            meta = metadata(args)
            cells = []
            for rpc in args.rpc:
                if rpc not in RPCS:
                    raise SystemExit(f"--rpc: {rpc!r} is not one of {', '.join(RPCS)}")
                for conc in args.concurrency:
                    runs: dict[str, list[Run]] = {"direct": [], "gateway": []}
                    for rep in range(args.repeat):
                        for name, address, cpu in (
                                ("direct", triton.grpc, None),
                                ("gateway", gateway.grpc_address, gateway.cpu_seconds)):
                            print(f"  {rpc:6} c={conc:<3} rep {rep + 1}/{args.repeat} {name:8}",
                                  end="", flush=True)
                            run = measure(address, raw, conc, args, cpu, rpc)
                            print(f" {run.rps:8.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                                  f"p99 {run.p99_ms:6.2f} ms  errors {run.errors}")
                            runs[name].append(run)
                    direct = summarize(runs["direct"], None)
                    cells.append({"rpc": rpc, "concurrency": conc, "direct": direct,
                                  "gateway": summarize(runs["gateway"], direct)})
    finally:
        if gateway is not None:
            gateway.stop()
        triton.stop()
    print_table(cells)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"metadata": meta, "cells": cells}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
