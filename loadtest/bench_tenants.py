#!/usr/bin/env python3
"""Noisy-neighbour benchmark: does one tenant over its quota hurt another tenant's latency?

One Triton (``identity``), one gateway with API keys and two tenants: ``quiet`` (no quota)
and ``noisy`` (``--noisy-quota`` requests/s). Both phases send the quiet tenant's requests
open-loop at ``--quiet-rps`` (a fixed schedule, so its latency is not hidden by back-off):

1. unloaded: the quiet tenant alone;
2. loaded:   the same, while the noisy tenant sends ``--noisy-rps`` (default 5x its quota)
             from the same load generator.

Reported: the quiet tenant's p50/p99 in both phases and their ratio (target: loaded p99
within 20% of unloaded), what the noisy tenant got (admitted/s, 429s), and any quiet request
that failed (lost). A request that met a keep-alive connection the gateway had just closed for
idleness is sent again on a new one, as HTTP clients do, and counted as resent. The load
generator is one asyncio process on raw keep-alive HTTP/1.1 connections; the gateway, Triton
and the generator share this machine's cores.

    .venv/bin/python loadtest/bench_tenants.py --duration 20
Writes ``loadtest/results/tenants.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from gateway.pipeline.auth import hash_key
from servegate.local.launch import free_port, start_triton

KEYS = {"quiet": "quiet-bench-key-0123456789", "noisy": "noisy-bench-key-0123456789"}
BODY = json.dumps({"inputs": [{"name": "DATA", "shape": [1, 16], "datatype": "FP32",
                               "data": [0.5] * 16}]}).encode()


class Conn:
    """One keep-alive HTTP/1.1 connection sending the same infer request."""

    def __init__(self, port: int, tenant: str) -> None:
        self.port = port
        self.request = (
            b"POST /v2/models/identity/infer HTTP/1.1\r\nhost: bench\r\n"
            b"authorization: Bearer " + KEYS[tenant].encode() + b"\r\n"
            b"content-type: application/json\r\ncontent-length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self) -> tuple[int, bool]:
        """The status, and whether a stale keep-alive connection had to be replaced (the
        server closed it while idle: the request is sent again on a new one, as HTTP clients
        do for a reused connection that fails before any response byte)."""
        reused = self.writer is not None and not self.writer.is_closing()
        if reused and self.reader is not None and self.reader.at_eof():
            reused = False
            self.writer = None
        if not reused:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            return await self._exchange(), False
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return await self._exchange(), True

    async def _exchange(self) -> int:
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"connection" and value.strip().lower() == b"close":
                close = True
        await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return status


async def open_loop(port: int, tenant: str, rps: float, duration: float,
                    latencies: list[float], statuses: dict[int, int],
                    resent: list[int]) -> None:
    """Send at ``rps`` on a fixed schedule; a free connection from a pool takes each send."""
    pool: list[Conn] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        conn = pool.pop() if pool else Conn(port, tenant)
        try:
            status, again = await conn.call()
            resent[0] += again
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = 0
            conn.writer = None
        latencies.append(time.perf_counter() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1
        pool.append(conn)

    start = time.perf_counter()
    n = 0
    while True:
        at = start + n / rps
        if at - start >= duration:
            break
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(at))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.gather(*tasks)
    for conn in pool:
        if conn.writer is not None:
            conn.writer.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def phase(port: int, args: argparse.Namespace, noisy: bool) -> dict[str, Any]:
    quiet_lat: list[float] = []
    quiet_status: dict[int, int] = {}
    noisy_lat: list[float] = []
    noisy_status: dict[int, int] = {}
    quiet_resent, noisy_resent = [0], [0]
    jobs = [open_loop(port, "quiet", args.quiet_rps, args.duration, quiet_lat, quiet_status,
                      quiet_resent)]
    if noisy:
        jobs.append(open_loop(port, "noisy", args.noisy_rps, args.duration, noisy_lat,
                              noisy_status, noisy_resent))
    await asyncio.gather(*jobs)
    result: dict[str, Any] = {
        "quiet": {"sent": len(quiet_lat), "statuses": quiet_status,
                  "p50_ms": round(pct(quiet_lat, 0.5), 2),
                  "p99_ms": round(pct(quiet_lat, 0.99), 2),
                  "lost": len(quiet_lat) - quiet_status.get(200, 0),
                  "resent_on_stale_connection": quiet_resent[0]}}
    if noisy:
        result["noisy"] = {"sent": len(noisy_lat), "statuses": noisy_status,
                           "resent_on_stale_connection": noisy_resent[0],
                           "admitted_per_s": round(noisy_status.get(200, 0) / args.duration, 1)}
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    p.add_argument("--quiet-rps", type=float, default=100.0)
    p.add_argument("--noisy-quota", type=float, default=100.0)
    p.add_argument("--noisy-rps", type=float, default=500.0)
    p.add_argument("--repeat", type=int, default=2, help="unloaded/loaded pairs")
    p.add_argument("--out", type=Path, default=Path("loadtest/results/tenants.json"))
    args = p.parse_args()

    triton = start_triton(("identity",))
    work = Path(tempfile.mkdtemp(prefix="bench-tenants-"))
    config = {
        "pools": {"cpu": {"endpoints": [{"http": triton.http}]}},
        "models": {"identity": {"pool": "cpu"}},
        "auth": {},
        "tenants": {"quiet": {}, "noisy": {"requests_per_s": args.noisy_quota}},
    }
    (work / "servegate.yaml").write_text(yaml.safe_dump(config))
    (work / "keys.json").write_text(json.dumps({t: [hash_key(k)] for t, k in KEYS.items()}))
    port = free_port()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "servegate.cli", "gateway", "--config", str(work / "servegate.yaml"),
         "--api-keys-file", str(work / "keys.json"), "--host", "127.0.0.1",
         "--http-port", str(port), "--grpc-port", "0", "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                import urllib.request
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or gateway.poll() is not None:
                    raise SystemExit("gateway did not start") from None
                time.sleep(0.1)
        asyncio.run(phase(port, argparse.Namespace(**{**vars(args), "duration": 3}), False))
        runs = []
        for _ in range(args.repeat):
            unloaded = asyncio.run(phase(port, args, noisy=False))
            loaded = asyncio.run(phase(port, args, noisy=True))
            runs.append({"unloaded": unloaded, "loaded": loaded,
                         "p99_ratio": round(loaded["quiet"]["p99_ms"]
                                            / unloaded["quiet"]["p99_ms"], 3)})
    finally:
        gateway.terminate()
        gateway.wait(30)
        triton.stop()
    summary = {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "runs": runs,
        "p99_ratio_median": statistics.median(r["p99_ratio"] for r in runs),
        "quiet_lost": sum(r[ph]["quiet"]["lost"] for r in runs for ph in ("unloaded", "loaded")),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print("| run | quiet p50 / p99 alone (ms) | quiet p50 / p99 with noisy (ms) | p99 ratio |"
          " noisy admitted/s | noisy 429 |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(runs, 1):
        u, lo = r["unloaded"]["quiet"], r["loaded"]["quiet"]
        n = r["loaded"]["noisy"]
        print(f"| {i} | {u['p50_ms']} / {u['p99_ms']} | {lo['p50_ms']} / {lo['p99_ms']} | "
              f"{r['p99_ratio']} | {n['admitted_per_s']} | {n['statuses'].get(429, 0)} |")
    print(f"\nmedian p99 ratio {summary['p99_ratio_median']}, quiet requests lost: "
          f"{summary['quiet_lost']}")
    return 0 if summary["quiet_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
