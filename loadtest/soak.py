#!/usr/bin/env python3
"""Soak benchmark: minutes of mixed load through one gateway process, its memory watched.

Where it sits: outside the product, beside the other loadtest/ scripts; it drives the whole
request path (client -> gateway REST/gRPC -> split/sticky/pin -> Triton, shadow mirror, cold
start through the autoscaler's local actuator) for ``--duration`` seconds and checks that
nothing is lost and the gateway does not grow.

Stack (all on free ports, stopped at the end): the demo's Triton servers and config
(:mod:`servegate.demo`: ``classifier`` split 90/10 v1/v2 sticky on ``x-user-id`` with 10%
mirrored to v3, ``embedder`` and ``identity`` on the main pool, ``cold-classifier`` on the
pool ``cold`` at zero), ``servegate gateway`` and ``servegate autoscaler --actuator local`` each
as its own process, so the gateway's RSS is its own.

Load, open loop at ``--rate`` (at most ``--max-inflight`` outstanding), drawn by weight:
REST and gRPC (``tritonclient.grpc.aio``) ``classifier`` infer without headers, sticky
(``x-user-id`` from ``--users`` users) and pinned (``x-servegate-variant``); ``identity`` with a
64 KiB binary tensor and ``embedder`` (REST); metadata and readiness calls (both protocols).
Every answer is checked: outputs against the demo's reference models (which also tells the
classifier version that answered, so pins and stickiness are checked on gRPC too), the variant
header, the identity bytes. Beside it, the scale-to-zero cycle: a burst of ``--cold-burst``
requests (half REST, half gRPC) to ``cold-classifier``, then idle until the autoscaler reports
the pool at zero (``scale_to_zero_grace_s`` = ``--grace-s`` without traffic) plus 1-5 s, then
the next burst, so the pool goes to zero and comes back several times.

Accounting per kind: sent, ok, errors (status and message) and lost. Lost = no response: a
transport failure, a client-side timeout, or a request still pending when the run ends. No
status other than success is expected, so every non-success answer is an error.

Sampled every ``--sample-s``: the gateway's RSS (psutil), fds and threads, and the autoscaler's
RSS. Reported: RSS at the end of ``--warmup`` and at the end, growth, max, slope after
warm-up; throughput, p50/p99 per kind; cold-start cycles; shadow mirrors (from ``/metrics``).
A markdown summary goes to stdout, everything to ``--out`` (JSON). ``--profile`` adds the size
of the gateway's ``/metrics`` (series, distinct ``endpoint`` labels) to every sample;
``--cold-burst 0`` leaves the scale-to-zero cycle out (to tell what growth it causes).

Exit status 1 if anything was lost, any answer was an error, or the gateway's RSS grew by
``--max-rss-growth-mb`` (50) or more from warm-up end to the end; 2 if the stack did not start.

    .venv/bin/python loadtest/soak.py --duration 600
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import psutil
import tritonclient.grpc.aio as tgrpc
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from servegate.demo import (
    DemoSettings,
    autoscaler_command,
    demo_config,
    gateway_command,
    start_demo_tritons,
    stop_tritons,
    terminate,
    wait_ready,
)
from servegate.local.launch import TritonProcess, free_port
from servegate.local.models import FEATURES, classify, embed

MB = 1024 * 1024
VERSION_OF = {"stable": 1, "canary": 2}  # the demo's split: variant -> classifier version
IDENTITY_FLOATS = 16 * 1024  # 64 KiB of FP32
N_VECTORS = 64
# Messages gRPC core (not the gateway) writes when no answer came back at all.
_GRPC_TRANSPORT = re.compile(
    r"failed to connect|Socket closed|Connection reset|Connection refused|Broken pipe|GOAWAY|"
    r"Stream removed|keepalive|RST_STREAM|^Deadline Exceeded$", re.IGNORECASE)

MIX: dict[str, float] = {
    "rest_split": 20, "rest_sticky": 20, "rest_pin": 5, "rest_identity": 8,
    "rest_embedder": 5, "rest_meta": 5,
    "grpc_split": 10, "grpc_sticky": 10, "grpc_pin": 3, "grpc_meta": 3,
}


class Failed(Exception):
    """A request that did not succeed; ``lost`` when no answer came back at all."""

    def __init__(self, message: str, lost: bool = False) -> None:
        super().__init__(message)
        self.lost = lost


# --- accounting ---------------------------------------------------------------------------

@dataclass
class KindStats:
    sent: int = 0
    ok: int = 0
    lost: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {"sent": self.sent, "ok": self.ok, "errors": sum(self.errors.values()),
                "lost": self.lost, "p50_ms": _pct(lat, 0.50), "p99_ms": _pct(lat, 0.99),
                "max_ms": lat[-1] * 1000 if lat else None,
                "error_messages": dict(self.errors.most_common(20))}


def _pct(sorted_s: list[float], q: float) -> float | None:
    if not sorted_s:
        return None
    return sorted_s[min(len(sorted_s) - 1, int(q * len(sorted_s)))] * 1000


class Ledger:
    """Every request the soak sends, by kind: it is counted before it is sent."""

    def __init__(self) -> None:
        self.kinds: dict[str, KindStats] = {}
        self.pending: set[asyncio.Task[None]] = set()

    def stats(self, kind: str) -> KindStats:
        return self.kinds.setdefault(kind, KindStats())

    async def run(self, kind: str, call: Callable[[], Awaitable[object]]) -> None:
        st = self.stats(kind)
        st.sent += 1
        t0 = time.perf_counter()
        try:
            await call()
        except Failed as exc:
            self._fail(st, exc.lost, str(exc))
        except asyncio.CancelledError:
            self._fail(st, True, "no response before the end of the run")
            raise
        except Exception as exc:
            lost, message = _translate(exc)
            self._fail(st, lost, message)
        else:
            st.ok += 1
            st.latencies.append(time.perf_counter() - t0)

    def spawn(self, kind: str, call: Callable[[], Awaitable[object]]) -> asyncio.Task[None]:
        task = asyncio.create_task(self.run(kind, call))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        return task

    @staticmethod
    def _fail(st: KindStats, lost: bool, message: str) -> None:
        if lost:
            st.lost += 1
            message = "LOST: " + message
        st.errors[message[:300]] += 1


def _translate(exc: Exception) -> tuple[bool, str]:
    """(lost, message) for a client library's exception."""
    if isinstance(exc, InferenceServerException):
        status, message = str(exc.status()), str(exc.message())
        lost = bool(_GRPC_TRANSPORT.search(message)) and any(
            s in status for s in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN"))
        return lost, f"grpc {status}: {message}"
    if isinstance(exc, TimeoutError):
        return True, "client timeout"
    if isinstance(exc, aiohttp.ClientError):
        return True, f"transport: {type(exc).__name__}: {exc}"
    return False, f"client-side {type(exc).__name__}: {exc}"


# --- request bodies and reference answers -------------------------------------------------

@dataclass(frozen=True)
class Fixtures:
    vectors: npt.NDArray[np.float32]  # [N_VECTORS, FEATURES]
    bodies: list[bytes]  # V2 JSON infer bodies, one per vector
    expected: dict[int, npt.NDArray[np.float32]]  # classifier version -> [N_VECTORS, 4]
    identity_body: bytes
    identity_headers: dict[str, str]
    identity_payload: bytes
    embed_body: bytes
    embed_expected: npt.NDArray[np.float32]

    @classmethod
    def build(cls, seed: int) -> Fixtures:
        rng = np.random.default_rng(seed)
        vectors = np.round(rng.uniform(-1, 1, (N_VECTORS, FEATURES)), 4).astype(np.float32)
        bodies = [json.dumps({"inputs": [{"name": "INPUT", "shape": [1, FEATURES],
                                          "datatype": "FP32", "data": v.tolist()}]}).encode()
                  for v in vectors]
        payload = rng.standard_normal(IDENTITY_FLOATS).astype(np.float32).tobytes()
        header = json.dumps({
            "inputs": [{"name": "DATA", "shape": [1, IDENTITY_FLOATS], "datatype": "FP32",
                        "parameters": {"binary_data_size": len(payload)}}],
            "outputs": [{"name": "OUTPUT", "parameters": {"binary_data": True}}]}).encode()
        text = b"soak test of the servegate gateway"
        embed_body = json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1],
                                             "datatype": "BYTES",
                                             "data": [text.decode()]}]}).encode()
        return cls(vectors, bodies, {v: classify(vectors, v) for v in (1, 2)},
                   header + payload,
                   {"Inference-Header-Content-Length": str(len(header)),
                    "Content-Type": "application/octet-stream"},
                   payload, embed_body, embed([text])[0])

    def version_of(self, index: int, probs: Any) -> int:
        """Which classifier version produced ``probs`` for vector ``index``."""
        got = np.asarray(probs, dtype=np.float32).reshape(-1)
        for version, expected in self.expected.items():
            if got.shape == (4,) and np.allclose(got, expected[index], atol=1e-4):
                return version
        raise Failed(f"classifier outputs match no version: {got.tolist()}")


# --- the load -----------------------------------------------------------------------------

@dataclass
class ColdCycle:
    started_s: float
    burst: int
    ok: int
    cold_start_ms: float | None  # largest x-servegate-cold-start-ms among REST answers
    zero_after_s: float | None  # burst end -> the autoscaler reports the pool at zero


class Load:
    """The soak's client side: one aiohttp session and one gRPC channel to the gateway."""

    def __init__(self, base: str, grpc_addr: str, status_url: str, fx: Fixtures,
                 args: argparse.Namespace, ledger: Ledger) -> None:
        self.base, self.status_url, self.fx, self.args, self.ledger = (
            base, status_url, fx, args, ledger)
        self.rng = random.Random(args.seed)
        self.grpc = tgrpc.InferenceServerClient(grpc_addr)
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.max_inflight + args.cold_burst),
            auto_decompress=False, skip_auto_headers=("Accept-Encoding", "User-Agent"))
        self.sticky: dict[str, int] = {}  # user -> classifier version first seen
        self.cycles: list[ColdCycle] = []
        self.calls: dict[str, Callable[[], Awaitable[object]]] = {
            "rest_split": lambda: self.rest_classifier({}),
            "rest_sticky": lambda: self.rest_classifier({"x-user-id": self._user()}),
            "rest_pin": lambda: self.rest_classifier({"x-servegate-variant": self._pin()}),
            "rest_identity": self.rest_identity, "rest_embedder": self.rest_embedder,
            "rest_meta": self.rest_meta,
            "grpc_split": lambda: self.grpc_classifier({}),
            "grpc_sticky": lambda: self.grpc_classifier({"x-user-id": self._user()}),
            "grpc_pin": lambda: self.grpc_classifier({"x-servegate-variant": self._pin()}),
            "grpc_meta": self.grpc_meta,
        }

    async def aclose(self) -> None:
        await self.http.close()
        await self.grpc.close()

    def _user(self) -> str:
        return f"user-{self.rng.randrange(self.args.users)}"

    def _pin(self) -> str:
        return self.rng.choice(("stable", "canary"))

    def _check_variant(self, headers: dict[str, str], version: int) -> None:
        """Pins answer with the pinned version; a user always gets the same version."""
        pin, user = headers.get("x-servegate-variant"), headers.get("x-user-id")
        if pin is not None and VERSION_OF[pin] != version:
            raise Failed(f"pinned {pin} but v{version} answered")
        if user is not None:
            first = self.sticky.setdefault(user, version)
            if first != version:
                raise Failed(f"sticky user got v{version} after v{first}")

    async def _post(self, path: str, body: bytes, headers: dict[str, str],
                    timeout: float) -> tuple[bytes, Any]:
        async with self.http.post(self.base + path, data=body, headers=headers,
                                  timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            data = await r.read()
            if r.status != 200:
                raise Failed(f"HTTP {r.status}: {data[:200].decode(errors='replace')}")
            return data, r.headers

    async def rest_classifier(self, headers: dict[str, str], model: str = "classifier",
                              timeout: float | None = None) -> float | None:
        i = self.rng.randrange(N_VECTORS)
        data, resp_headers = await self._post(f"/v2/models/{model}/infer", self.fx.bodies[i],
                                              headers, timeout or self.args.timeout_s)
        outs = {o["name"]: o for o in json.loads(data)["outputs"]}
        version = self.fx.version_of(i, outs["PROBS"]["data"])
        if model == "classifier":
            variant = resp_headers.get("x-servegate-variant")
            if variant not in VERSION_OF or VERSION_OF[variant] != version:
                raise Failed(f"variant header {variant!r} but v{version} answered")
            self._check_variant(headers, version)
        elif version != 1:
            raise Failed(f"{model}: v{version} answered, v1 expected")
        cold = resp_headers.get("x-servegate-cold-start-ms")
        return float(cold) if cold is not None else None

    async def grpc_classifier(self, headers: dict[str, str], model: str = "classifier",
                              timeout: float | None = None) -> None:
        i = self.rng.randrange(N_VECTORS)
        x = tgrpc.InferInput("INPUT", [1, FEATURES], "FP32")
        x.set_data_from_numpy(self.fx.vectors[i:i + 1])
        result = await self.grpc.infer(model, [x], headers=headers,
                                       client_timeout=timeout or self.args.timeout_s)
        probs = result.as_numpy("PROBS")
        if probs is None:
            raise Failed("no PROBS in the gRPC answer")
        version = self.fx.version_of(i, probs)
        if model == "classifier":
            self._check_variant(headers, version)
        elif version != 1:
            raise Failed(f"{model}: v{version} answered, v1 expected")

    async def rest_identity(self) -> None:
        data, headers = await self._post("/v2/models/identity/infer", self.fx.identity_body,
                                         self.fx.identity_headers, self.args.timeout_s)
        hlen = int(headers.get("Inference-Header-Content-Length", "-1"))
        if hlen < 0 or data[hlen:] != self.fx.identity_payload:
            raise Failed(f"identity: {len(data) - max(hlen, 0)} bytes back, not the 64 KiB sent")

    async def rest_embedder(self) -> None:
        data, _ = await self._post("/v2/models/embedder/infer", self.fx.embed_body, {},
                                   self.args.timeout_s)
        out = json.loads(data)["outputs"][0]["data"]
        if not np.allclose(np.asarray(out, dtype=np.float32), self.fx.embed_expected,
                           atol=1e-5):
            raise Failed("embedder output differs from the reference")

    async def rest_meta(self) -> None:
        path, expect = self.rng.choice((
            ("/v2/models/classifier", "classifier"), ("/v2/models/classifier/ready", None),
            ("/v2/health/ready", None), ("/v2/models/embedder/versions/1", "embedder"),
            ("/v2/models/identity/ready", None)))
        async with self.http.get(self.base + path, timeout=aiohttp.ClientTimeout(
                total=self.args.timeout_s)) as r:
            data = await r.read()
            if r.status != 200:
                raise Failed(f"GET {path}: HTTP {r.status}: {data[:200]!r}")
        if expect is not None and json.loads(data).get("name") != expect:
            raise Failed(f"GET {path}: metadata names {json.loads(data).get('name')!r}")

    async def grpc_meta(self) -> None:
        which = self.rng.randrange(3)
        t = self.args.timeout_s
        if which == 0:
            md = await self.grpc.get_model_metadata("classifier", client_timeout=t)
            if md.name != "classifier":
                raise Failed(f"gRPC ModelMetadata names {md.name!r}")
        elif which == 1:
            if not await self.grpc.is_model_ready("embedder", client_timeout=t):
                raise Failed("gRPC ModelReady(embedder) is false")
        elif not await self.grpc.is_server_ready(client_timeout=t):
            raise Failed("gRPC ServerReady is false")

    # --- the steady mix, open loop --------------------------------------------------------

    async def steady(self, until: float) -> int:
        """Start ``rate`` requests a second until ``until``; returns arrivals skipped because
        ``max_inflight`` requests were outstanding for over a second."""
        kinds, weights = list(MIX), list(MIX.values())
        sem = asyncio.Semaphore(self.args.max_inflight)
        t0, issued, skipped = time.monotonic(), 0, 0
        while (now := time.monotonic()) < until:
            due = int((now - t0) * self.args.rate)
            if due - issued > self.args.rate:  # a second behind: drop the backlog
                skipped += due - issued - int(self.args.rate)
                issued = due - int(self.args.rate)
            while issued < due:
                await sem.acquire()
                kind = self.rng.choices(kinds, weights)[0]
                self.ledger.spawn(kind, self.calls[kind]).add_done_callback(
                    lambda _: sem.release())
                issued += 1
            await asyncio.sleep(0.005)
        return skipped

    # --- scale to zero and back -----------------------------------------------------------

    async def cold_cycles(self, t_start: float, until: float) -> None:
        while self.args.cold_burst > 0 and time.monotonic() < until - self.args.cold_min_left_s:
            cycle = await self._cold_burst(round(time.monotonic() - t_start, 1))
            self.cycles.append(cycle)
            cycle.zero_after_s = await self._wait_zero(until)
            print(f"  cold cycle {len(self.cycles)} at {cycle.started_s:.0f}s: "
                  f"{cycle.ok}/{cycle.burst} ok, held {cycle.cold_start_ms} ms, back at zero "
                  f"after {cycle.zero_after_s} s", flush=True)
            await asyncio.sleep(self.rng.uniform(1.0, 5.0))

    async def _cold_burst(self, started_s: float) -> ColdCycle:
        """``cold_burst`` concurrent requests to the cold pool, half REST, half gRPC."""
        cold_ms: list[float] = []

        async def rest() -> None:
            ms = await self.rest_classifier({}, "cold-classifier", self.args.cold_timeout_s)
            if ms is not None:
                cold_ms.append(ms)

        async def grpc() -> None:
            await self.grpc_classifier({}, "cold-classifier", self.args.cold_timeout_s)

        n = self.args.cold_burst
        before = self.ledger.stats("cold_rest").ok + self.ledger.stats("cold_grpc").ok
        await asyncio.gather(*(self.ledger.spawn("cold_rest", rest) if k % 2 == 0
                               else self.ledger.spawn("cold_grpc", grpc) for k in range(n)))
        ok = self.ledger.stats("cold_rest").ok + self.ledger.stats("cold_grpc").ok - before
        return ColdCycle(started_s, n, ok, max(cold_ms) if cold_ms else None, None)

    async def metrics_profile(self) -> dict[str, float]:
        """--profile: the size of the gateway's /metrics, its series and endpoint labels."""
        async with self.http.get(f"{self.base}/metrics",
                                 timeout=aiohttp.ClientTimeout(total=5)) as r:
            text = await r.text()
        series = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        endpoints = set(re.findall(r'endpoint="([^"]*)"', text))
        return {"metrics_kb": round(len(text) / 1024, 1), "metrics_series": len(series),
                "metrics_endpoints": len(endpoints)}

    async def _wait_zero(self, until: float) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() < until:
            try:
                async with self.http.get(f"{self.status_url}/pools/cold/endpoints",
                                         timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status == 200 and not (await r.json()).get("endpoints"):
                        return round(time.monotonic() - t0, 1)
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.5)
        return None


# --- processes and memory -----------------------------------------------------------------

@dataclass
class Stack:
    settings: DemoSettings
    workdir: Path
    tritons: list[TritonProcess] = field(default_factory=list)
    gateway: subprocess.Popen[bytes] | None = None
    autoscaler: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://{self.settings.host}:{self.settings.http_port}"

    @property
    def status_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.autoscaler_port}"

    def start(self, grace_s: float) -> None:
        s = self.settings
        print(f"starting {s.triton_instances + 2} Triton servers ...", flush=True)
        self.tritons = start_demo_tritons(s)
        cfg = demo_config(self.tritons[:-2], self.tritons[-2], self.tritons[-1], self.base,
                          self.status_url)
        cfg["autoscaling"]["pools"]["cold"]["scale_to_zero_grace_s"] = grace_s
        config_path, token_path = self.workdir / "servegate.yaml", self.workdir / "admin-token"
        config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        token_path.write_text(secrets.token_urlsafe(24) + "\n")
        with open(self.workdir / "gateway.log", "wb") as gw_log, \
                open(self.workdir / "autoscaler.log", "wb") as as_log:
            self.gateway = subprocess.Popen(gateway_command(s, config_path, token_path),
                                            stdout=gw_log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
            self.autoscaler = subprocess.Popen(autoscaler_command(s, config_path),
                                               stdout=as_log, stderr=subprocess.STDOUT,
                                               start_new_session=True)
        wait_ready(f"{self.base}/v2/health/ready", 60, self.gateway)
        wait_ready(f"{self.status_url}/status", 60, self.autoscaler)

    def stop(self) -> None:
        terminate(self.gateway)
        terminate(self.autoscaler)
        stop_tritons(self.tritons)

    def log_lines(self, name: str, pattern: str) -> list[str]:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return [ln for ln in text.splitlines() if re.search(pattern, ln)]


class Sampler:
    """RSS (and fds, threads, CPU) of the gateway and the autoscaler every ``every`` s."""

    def __init__(self, gateway_pid: int, autoscaler_pid: int, every: float,
                 profile: Callable[[], Awaitable[dict[str, float]]] | None = None) -> None:
        self.gateway, self.autoscaler = psutil.Process(gateway_pid), psutil.Process(autoscaler_pid)
        self.every = every
        self.profile = profile  # --profile: extra figures (from /metrics) per sample
        self.samples: list[dict[str, float]] = []

    def sample(self, t: float) -> dict[str, float]:
        with self.gateway.oneshot():
            mem, cpu = self.gateway.memory_info(), self.gateway.cpu_times()
            row = {"t_s": round(t, 1), "rss_mb": round(mem.rss / MB, 2),
                   "fds": self.gateway.num_fds(), "threads": self.gateway.num_threads(),
                   "cpu_s": round(cpu.user + cpu.system, 2)}
        with contextlib.suppress(psutil.Error):
            row["autoscaler_rss_mb"] = round(self.autoscaler.memory_info().rss / MB, 2)
        self.samples.append(row)
        return row

    async def run(self, t_start: float, until: float) -> None:
        while time.monotonic() < until:
            row = self.sample(time.monotonic() - t_start)
            if self.profile is not None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    row.update(await self.profile())
            await asyncio.sleep(min(self.every, max(0.0, until - time.monotonic())))

    def report(self, warmup_s: float) -> dict[str, Any]:
        after = [s for s in self.samples if s["t_s"] >= warmup_s] or self.samples[-1:]
        first, last = after[0], self.samples[-1]
        slope = None
        if len(after) >= 3:
            ts, rs = [s["t_s"] for s in after], [s["rss_mb"] for s in after]
            slope = statistics.linear_regression(ts, rs).slope * 600  # MB per 10 minutes
        return {"rss_start_mb": self.samples[0]["rss_mb"],
                "rss_warmup_end_mb": first["rss_mb"], "warmup_end_t_s": first["t_s"],
                "rss_end_mb": last["rss_mb"],
                "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 2),
                "rss_max_mb": max(s["rss_mb"] for s in self.samples),
                "rss_slope_mb_per_10min": round(slope, 2) if slope is not None else None,
                "fds_warmup_end": first["fds"], "fds_end": last["fds"],
                "threads_end": last["threads"], "gateway_cpu_s": last["cpu_s"],
                "autoscaler_rss_warmup_end_mb": first.get("autoscaler_rss_mb"),
                "autoscaler_rss_end_mb": last.get("autoscaler_rss_mb"),
                **self._profile_report(after)}

    @staticmethod
    def _profile_report(after: list[dict[str, float]]) -> dict[str, Any]:
        rows = [s for s in after if "metrics_series" in s]
        if not rows:
            return {}
        return {f"{k}_{at}": row[k] for k in ("metrics_series", "metrics_endpoints",
                                              "metrics_kb")
                for at, row in (("warmup_end", rows[0]), ("end", rows[-1]))}


def scrape(text: str) -> dict[str, Any]:
    """The gateway counters the soak reports, from its ``/metrics`` text."""
    out: dict[str, Any] = {"shadow": Counter(), "activations": 0.0, "cold_starts": 0.0,
                           "cold_start_s_sum": 0.0, "variants": Counter(), "codes": Counter(),
                           "rejected": Counter(), "upstream_errors": Counter()}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            lb = s.labels
            if s.name == "servegate_shadow_requests_total":
                out["shadow"][lb["result"]] += s.value
            elif s.name == "servegate_pool_activations_total" and lb["pool"] == "cold":
                out["activations"] += s.value
            elif s.name == "servegate_cold_start_seconds_count" and lb["pool"] == "cold":
                out["cold_starts"] += s.value
            elif s.name == "servegate_cold_start_seconds_sum" and lb["pool"] == "cold":
                out["cold_start_s_sum"] += s.value
            elif s.name == "servegate_variant_requests_total":
                out["variants"][f"{lb['variant']} {lb['code_class']}"] += s.value
            elif s.name == "servegate_requests_total":
                out["codes"][f"{lb['protocol']} {lb['code_class']}"] += s.value
            elif s.name == "servegate_rejected_requests_total":
                out["rejected"][f"{lb['protocol']} {lb['code']}"] += s.value
            elif s.name == "servegate_upstream_errors_total":
                out["upstream_errors"][f"{lb['pool']} {lb['kind']}"] += s.value
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in out.items()}


# --- the run ------------------------------------------------------------------------------

async def soak(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    assert stack.gateway is not None and stack.autoscaler is not None
    ledger = Ledger()
    s = stack.settings
    load = Load(stack.base, f"{s.host}:{s.grpc_port}", stack.status_url,
                Fixtures.build(args.seed), args, ledger)
    sampler = Sampler(stack.gateway.pid, stack.autoscaler.pid, args.sample_s,
                      load.metrics_profile if args.profile else None)
    t_start, cpu_start = time.monotonic(), time.process_time()
    until = t_start + args.duration
    try:
        sampling = asyncio.create_task(sampler.run(t_start, until))
        cold = asyncio.create_task(load.cold_cycles(t_start, until))
        skipped = await load.steady(until)
        await asyncio.gather(sampling, cold)
        load_s = time.monotonic() - t_start
        if ledger.pending:  # drain: whatever has not answered by then is lost
            await asyncio.wait(set(ledger.pending), timeout=args.drain_s)
            for task in list(ledger.pending):
                task.cancel()
            await asyncio.gather(*ledger.pending, return_exceptions=True)
        sampler.sample(time.monotonic() - t_start)
        async with load.http.get(f"{stack.base}/metrics") as r:
            metrics = scrape(await r.text())
    finally:
        await load.aclose()
    return {"load_s": round(load_s, 1), "skipped_arrivals": skipped, "ledger": ledger,
            "client_cpu_s": round(time.process_time() - cpu_start, 1),
            "cycles": load.cycles, "sampler": sampler, "metrics": metrics}


def build_report(run: dict[str, Any], stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    ledger: Ledger = run["ledger"]
    kinds = {k: v.summary() for k, v in sorted(ledger.kinds.items())}
    steady = [lat for k, v in ledger.kinds.items() if not k.startswith("cold")
              for lat in v.latencies]
    steady.sort()
    sent = sum(v.sent for v in ledger.kinds.values())
    ok = sum(v.ok for v in ledger.kinds.values())
    lost = sum(v.lost for v in ledger.kinds.values())
    cycles: list[ColdCycle] = run["cycles"]
    memory = run["sampler"].report(min(args.warmup, args.duration / 2))
    m = run["metrics"]
    summary = {
        "duration_s": args.duration, "load_s": run["load_s"], "rate_target": args.rate,
        "sent": sent, "ok": ok, "errors": sent - ok - lost, "lost": lost,
        "throughput_rps": round(ok / run["load_s"], 1),
        "p50_ms": _pct(steady, 0.5), "p99_ms": _pct(steady, 0.99),
        "skipped_arrivals": run["skipped_arrivals"], "client_cpu_s": run["client_cpu_s"],
        "load_avg_end": [round(x, 2) for x in psutil.getloadavg()],
        "cold_bursts": len(cycles),
        "cold_cycles_seen": sum(1 for c in cycles if c.cold_start_ms is not None),
        "cold_activations": m["activations"], "cold_starts": m["cold_starts"],
        "cold_start_mean_s": (round(m["cold_start_s_sum"] / m["cold_starts"], 2)
                              if m["cold_starts"] else None),
        "shadow": m["shadow"], "shadow_sent": sum(m["shadow"].values()),
        **memory,
        "gateway_log_errors": len(stack.log_lines("gateway", r"ERROR|Traceback")),
        "autoscaler_log_errors": len(stack.log_lines("autoscaler", r"ERROR|Traceback")),
    }
    summary["passed"] = (lost == 0 and summary["errors"] == 0
                         and memory["rss_growth_mb"] < args.max_rss_growth_mb)
    return {"summary": summary, "kinds": kinds, "cold_cycles": [asdict(c) for c in cycles],
            "metrics": m, "samples": run["sampler"].samples,
            "args": vars(args), "workdir": str(stack.workdir),
            "gateway_log_tail": stack.log_lines("gateway", r"WARNING|ERROR|Traceback")[-30:]}


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.1f}" if isinstance(x, float) else str(x)


def markdown(report: dict[str, Any], limit_mb: float) -> str:
    s = report["summary"]
    lines = [f"## Soak: {s['load_s']:.0f} s, {s['sent']} requests, "
             f"{'PASSED' if s['passed'] else 'FAILED'}", "",
             "| kind | sent | ok | errors | lost | p50 ms | p99 ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind, k in report["kinds"].items():
        lines.append(f"| {kind} | {k['sent']} | {k['ok']} | {k['errors']} | {k['lost']} | "
                     f"{_fmt(k['p50_ms'])} | {_fmt(k['p99_ms'])} |")
    lines += [
        f"| **all** | {s['sent']} | {s['ok']} | {s['errors']} | {s['lost']} | "
        f"{_fmt(s['p50_ms'])} | {_fmt(s['p99_ms'])} |", "",
        f"- throughput: {s['throughput_rps']} req/s answered (target {s['rate_target']} req/s "
        f"plus cold bursts; {s['skipped_arrivals']} arrivals skipped at max in-flight); "
        "p50/p99 above exclude the cold bursts",
        f"- gateway RSS: {s['rss_warmup_end_mb']} MB at warm-up end ({s['warmup_end_t_s']} s), "
        f"{s['rss_end_mb']} MB at the end: growth {s['rss_growth_mb']} MB "
        f"(limit {limit_mb:g}), max {s['rss_max_mb']} MB, slope "
        f"{_fmt(s['rss_slope_mb_per_10min'])} MB/10 min; fds {s['fds_warmup_end']} -> "
        f"{s['fds_end']}; gateway CPU {s['gateway_cpu_s']} s, load generator CPU "
        f"{s['client_cpu_s']} s, load average at the end {s['load_avg_end']}",
        f"- autoscaler RSS: {s['autoscaler_rss_warmup_end_mb']} -> "
        f"{s['autoscaler_rss_end_mb']} MB",
        *([f"- gateway /metrics (--profile): {s['metrics_series_warmup_end']} -> "
           f"{s['metrics_series_end']} series, {s['metrics_endpoints_warmup_end']} -> "
           f"{s['metrics_endpoints_end']} endpoint labels, {s['metrics_kb_warmup_end']} -> "
           f"{s['metrics_kb_end']} KB"] if "metrics_series_end" in s else []),
        f"- scale to zero: {s['cold_bursts']} bursts, {s['cold_cycles_seen']} answered after a "
        f"cold start (x-servegate-cold-start-ms), {s['cold_activations']:.0f} activations and "
        f"{s['cold_starts']:.0f} cold starts in /metrics (mean {_fmt(s['cold_start_mean_s'])} s)",
        f"- shadow mirrors: {s['shadow_sent']:.0f} ({', '.join(f'{k} {v:.0f}' for k, v in sorted(s['shadow'].items())) or 'none'})",  # noqa: E501
        f"- gateway log: {s['gateway_log_errors']} ERROR/Traceback lines; autoscaler log: "
        f"{s['autoscaler_log_errors']}",
    ]
    errors = Counter[str]()
    for kind, k in report["kinds"].items():
        for msg, n in k["error_messages"].items():
            errors[f"{kind}: {msg}"] += n
    if errors:
        lines += ["", "Errors:", *(f"- {n} x {msg}" for msg, n in errors.most_common(15))]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    p.add_argument("--warmup", type=float, default=30.0,
                   help="RSS growth is measured from this point (30 s)")
    p.add_argument("--rate", type=float, default=100.0, help="steady arrivals per second (100)")
    p.add_argument("--max-inflight", type=int, default=64)
    p.add_argument("--users", type=int, default=200, help="distinct x-user-id values (200)")
    p.add_argument("--cold-burst", type=int, default=10,
                   help="requests per cold burst (10; 0: no scale-to-zero cycles)")
    p.add_argument("--grace-s", type=float, default=10.0,
                   help="the cold pool's scale_to_zero_grace_s (demo: 20; 10 for more cycles)")
    p.add_argument("--cold-min-left-s", type=float, default=20.0,
                   help="no cold burst starts when fewer seconds of the run remain (20)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="client timeout per request")
    p.add_argument("--cold-timeout-s", type=float, default=150.0,
                   help="client timeout for a cold-pool request")
    p.add_argument("--drain-s", type=float, default=30.0,
                   help="after the run, wait this long for answers; the rest are lost")
    p.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period (5 s)")
    p.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    p.add_argument("--triton-instances", type=int, default=2,
                   help="Triton servers in the main pool (2, as the demo)")
    p.add_argument("--log-level", default="warning", help="the gateway's log level")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", action="store_true",
                   help="also record the size of the gateway's /metrics (series, endpoint "
                        "labels) with every sample, to tell label growth from other growth")
    p.add_argument("--out", default="loadtest/results/soak.json")
    return p


def main() -> int:
    args = _parser().parse_args()
    host = "127.0.0.1"
    stack = Stack(DemoSettings(host=host, http_port=free_port(), grpc_port=free_port(),
                               triton_instances=args.triton_instances, log_level=args.log_level,
                               autoscaler_port=free_port(), keda_port=free_port()),
                  Path(tempfile.mkdtemp(prefix="servegate-soak-")))
    try:
        try:
            stack.start(args.grace_s)
        except RuntimeError as exc:
            print(f"stack did not start: {exc}\nlogs in {stack.workdir}", file=sys.stderr)
            return 2
        print(f"stack up (logs in {stack.workdir}); {args.duration:g} s of load at "
              f"{args.rate:g} req/s ...", flush=True)
        run = asyncio.run(soak(stack, args))
    finally:
        stack.stop()
    report = build_report(run, stack, args)
    print(markdown(report, args.max_rss_growth_mb))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwritten to {out}")
    return 0 if report["summary"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
