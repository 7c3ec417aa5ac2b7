#!/usr/bin/env python3
"""Multi-model benchmark: many models over few slots, loaded on demand, placed by demand.

On this machine: two Triton servers in explicit model-control mode over one repository of
``--models`` small Python-backend models (servegate/local/zoo.py), the gateway in front with a
model-managed pool ``zoo`` (``--slots`` models per endpoint). An open-loop client sends
``--rate`` requests/s for ``--warmup`` + ``--duration`` seconds (only the latter measured),
each to a model drawn from a Zipf(``--zipf``) popularity (rank 1 hottest). Beside it, at
``--probe-rate`` each, two reference streams: the same small infer to a model kept loaded on
both servers, (a) routed by the gateway through an ordinary pool of the same two servers
("routed") and (b) sent to Triton directly ("direct").

Reports: hit ratio (answered without a load), p50/p99 of hits vs routed vs direct, p50/p99 of
misses vs the load time Triton took (the gateway's own histogram), loads and evictions per
minute, and lost requests (anything not answered 200).

    .venv/bin/python loadtest/bench_multimodel.py --duration 60 --rate 20
Writes ``loadtest/results/multimodel.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from servegate.local.launch import TritonProcess, free_port
from servegate.local.zoo import start_zoo_servers, zoo_names

BODY = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32",
                               "data": [0.5] * 16}]}).encode()
HEADERS = {"content-type": "application/json"}


class Gateway:
    """``servegate gateway`` in its own process, on free ports."""

    def __init__(self, cfg: dict[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "servegate.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "gateway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "servegate.cli", "gateway", "--config", str(path),
             "--host", "127.0.0.1", "--http-port", str(self.port), "--grpc-port", "0",
             "--log-level", "info"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None
                 or _get(self.url + "/v2/health/ready")[0] == 200, 30, "gateway ready")
        if self.proc.poll() is not None:
            raise SystemExit(f"the gateway exited; see {workdir / 'gateway.log'}")

    def metric(self, name: str, **labels: str) -> float:
        _, body = _get(self.url + "/metrics")
        total = 0.0
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def wait_for(pred: Any, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def summary(ms: list[float]) -> dict[str, Any]:
    return {"n": len(ms), "p50_ms": _r(percentile(ms, 50)), "p99_ms": _r(percentile(ms, 99)),
            "mean_ms": _r(statistics.fmean(ms) if ms else None)}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def config(servers: list[TritonProcess], managed: list[str], reference: str,
           slots: int, min_residency_s: float, grace_s: float) -> dict[str, Any]:
    endpoints = [{"http": s.http, "grpc": s.grpc} for s in servers]
    # Two cores load Python-backend models (a process each) while serving: probes may take
    # seconds; what is measured here is placement, not ejection.
    health = {"probe_timeout_s": 10, "eject_after_failures": 5}
    models: dict[str, Any] = {m: {"pool": "zoo"} for m in managed}
    models[reference] = {"pool": "plain"}
    return {
        "pools": {
            "zoo": {"endpoints": endpoints, "model_control": "explicit",
                    "capacity": {"models": slots},
                    "residency": {"idle_grace_s": grace_s, "min_residency_s": min_residency_s,
                                  "max_wait_s": 120, "max_queue": 10000},
                    "health": health},
            "plain": {"endpoints": endpoints, "health": health},
        },
        "models": models,
    }


async def one(session: aiohttp.ClientSession, url: str, out: list[dict[str, Any]],
              model: str, kind: str) -> None:
    start = time.perf_counter()
    try:
        async with session.post(url, data=BODY, headers=HEADERS) as r:
            body = await r.read()
            status, cold = r.status, r.headers.get("x-servegate-cold-start-ms")
    except (aiohttp.ClientError, TimeoutError) as exc:
        status, cold = 0, None
        out.append({"kind": kind, "model": model, "status": 0, "error": repr(exc)[:200],
                    "ms": (time.perf_counter() - start) * 1000})
        return
    out.append({"kind": kind, "model": model, "status": status, "cold_ms": cold,
                "ms": (time.perf_counter() - start) * 1000,
                **({"error": f"{status} {body[:160].decode(errors='replace')}"}
                   if status != 200 else {})})


async def drive(gw: Gateway, triton: TritonProcess, managed: list[str], reference: str,
                args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, float]]:
    rng = random.Random(args.seed)
    weights = [1 / (k ** args.zipf) for k in range(1, len(managed) + 1)]
    results: list[dict[str, Any]] = []
    tasks: set[asyncio.Task[None]] = set()
    marks: list[dict[str, float]] = []  # the gateway's counters when the warm-up ended
    timeout = aiohttp.ClientTimeout(total=180)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector,
                                     skip_auto_headers=("Accept-Encoding",)) as session:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n_main = int(args.rate * (args.warmup + args.duration))
        n_probe = int(args.probe_rate * args.duration)
        schedule: list[tuple[float, str, str, str]] = []
        for i in range(n_main):
            model = rng.choices(managed, weights)[0]
            kind = "warmup" if i / args.rate < args.warmup else "zoo"
            schedule.append((i / args.rate, f"{gw.url}/v2/models/{model}/infer", model, kind))
        for i in range(n_probe):
            at = args.warmup + (i + 0.5) / args.probe_rate
            schedule.append((at, f"{gw.url}/v2/models/{reference}/infer", reference, "routed"))
            schedule.append((at + 0.01, f"http://{triton.http}/v2/models/{reference}/infer",
                             reference, "direct"))
        schedule.sort()
        for at, url, model, kind in schedule:
            delay = t0 + at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if kind == "zoo" and not marks:
                marks.append(await loop.run_in_executor(None, snapshot, gw))
            task = asyncio.create_task(one(session, url, results, model, kind))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return results, (marks[0] if marks else {})


_COUNTERS = (("servegate_model_loads_total", {"pool": "zoo", "result": "ok"}),
             ("servegate_model_loads_total", {"pool": "zoo", "result": "failed"}),
             ("servegate_model_load_duration_seconds_sum", {"pool": "zoo"}),
             ("servegate_model_load_duration_seconds_count", {"pool": "zoo"}),
             ("servegate_model_evictions_total", {"pool": "zoo"}))


def snapshot(gw: Gateway) -> dict[str, float]:
    return {name + json.dumps(labels): gw.metric(name, **labels) for name, labels in _COUNTERS}


def report(results: list[dict[str, Any]], gw: Gateway, args: argparse.Namespace,
           before: dict[str, float]) -> dict[str, Any]:
    zoo = [r for r in results if r["kind"] == "zoo"]
    ok = [r for r in zoo if r["status"] == 200]
    hits = [r["ms"] for r in ok if r["cold_ms"] is None]
    misses = [r["ms"] for r in ok if r["cold_ms"] is not None]

    def delta(name: str, **labels: str) -> float:
        return gw.metric(name, **labels) - before.get(name + json.dumps(labels), 0.0)

    loads = delta("servegate_model_loads_total", pool="zoo", result="ok")
    load_sum = delta("servegate_model_load_duration_seconds_sum", pool="zoo")
    load_n = delta("servegate_model_load_duration_seconds_count", pool="zoo")
    minutes = args.duration / 60
    return {
        "settings": {k: getattr(args, k) for k in ("models", "slots", "zipf", "rate",
                                                   "warmup", "duration", "probe_rate",
                                                   "min_residency_s", "grace_s", "seed")},
        "requests": len(zoo),
        "lost": sum(1 for r in results if r["status"] != 200),  # warm-up included
        "distinct_models_called": len({r["model"] for r in zoo}),
        "hit_ratio": round(len(hits) / len(ok), 4) if ok else None,
        "hits": summary(hits),
        "routed_ordinary_pool": summary([r["ms"] for r in results
                                         if r["kind"] == "routed" and r["status"] == 200]),
        "direct_triton": summary([r["ms"] for r in results
                                  if r["kind"] == "direct" and r["status"] == 200]),
        "misses": summary(misses),
        "load_time_mean_ms": round(load_sum / load_n * 1000, 1) if load_n else None,
        "loads": loads,
        "loads_per_minute": round(loads / minutes, 1),
        "evictions_per_minute": round(
            delta("servegate_model_evictions_total", pool="zoo") / minutes, 1),
        "failed_loads": delta("servegate_model_loads_total", pool="zoo", result="failed"),
        "errors": sorted({f'{r["kind"]} {r["model"]}: {r.get("error") or r["status"]}'
                          for r in results if r["status"] != 200})[:10],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--slots", type=int, default=10, help="models per endpoint")
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--rate", type=float, default=20.0, help="zoo requests/s (open loop)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    ap.add_argument("--warmup", type=float, default=30.0,
                    help="seconds of the same load first, not measured (slots fill up)")
    ap.add_argument("--probe-rate", type=float, default=5.0,
                    help="requests/s of each reference stream (routed, direct)")
    ap.add_argument("--min-residency-s", type=float, default=5.0)
    ap.add_argument("--grace-s", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--out", default="loadtest/results/multimodel.json")
    args = ap.parse_args()

    names = zoo_names(args.models + 1)
    managed, reference = names[:-1], names[-1]
    work = Path(tempfile.mkdtemp(prefix="servegate-bench-multimodel-"))
    print(f"starting 2 explicit-mode Tritons over {len(names)} models in {work} ...",
          flush=True)
    servers = start_zoo_servers(work / "zoo", servers=2, models=len(names))
    gw = None
    try:
        for s in servers:  # the reference model stays loaded on both servers
            wait_for(lambda s=s: _post(f"http://{s.http}/v2/repository/models/{reference}/load")
                     == 200, 60, f"{reference} loaded on {s.http}", every=0.5)
        gw = Gateway(config(servers, managed, reference, args.slots,
                                  args.min_residency_s, args.grace_s), work / "gateway")
        print(f"driving {args.rate:g} req/s over {len(managed)} models, Zipf({args.zipf:g}), "
              f"for {args.duration:g}s ...", flush=True)
        results, before = asyncio.run(drive(gw, servers[0], managed, reference, args))
        doc = report(results, gw, args, before)
    finally:
        if gw is not None:
            gw.stop()
        for i, s in enumerate(servers):
            s.stop()
            (work / f"triton-{i}.log").write_text("".join(s.log))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0 if doc["lost"] == 0 else 1


def _post(url: str) -> int:
    try:
        req = urllib.request.Request(url, data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
