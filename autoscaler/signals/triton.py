"""Triton signals per pool and model, from every endpoint's ``/metrics`` (REFERENCE §4).

Where it sits: the collector's Triton half, next to :mod:`.gateway`. Each endpoint's scrape
becomes a :class:`TritonStats`; :class:`TritonCollector` keeps the last two per endpoint and
reads a pool (or one model in it) as:

- ``pending``: the sum of ``nv_inference_pending_request_count`` (Triton's queue);
- ``queue_time_s``: delta ``nv_inference_queue_duration_us`` / delta
  ``nv_inference_request_success``, over all endpoints;
- ``avg_batch``: delta ``nv_inference_count`` / delta ``nv_inference_exec_count``, and
  ``batch_fill`` the same against each model's batch limit (largest preferred batch size if
  the model sets any, else ``max_batch_size``, from ``/v2/models/<m>/config``);
- ``gpu_utilization``: the mean ``nv_gpu_utilization`` (0..1) of the endpoints reporting it.

Per-request ratios with no requests in between read as idle :class:`NoData`; endpoints that
did not answer or are stale are left out, and none left reads as missing :class:`NoData`.
Versions of a model are added up. Endpoints without a ``metrics`` address are not scraped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from autoscaler.errors import SignalError
from autoscaler.policy.spec import NoData, Reading
from autoscaler.signals import promtext
from autoscaler.signals.http import get_json, get_text, metrics_url
from contracts.config import Config

PENDING = "nv_inference_pending_request_count"
SUCCESS = "nv_inference_request_success"
QUEUE_US = "nv_inference_queue_duration_us"
INFERENCES = "nv_inference_count"
EXECUTIONS = "nv_inference_exec_count"
GPU_UTIL = "nv_gpu_utilization"


@dataclass(frozen=True, slots=True)
class TritonModelCounters:
    pending: float = 0.0
    success: float = 0.0
    queue_us: float = 0.0
    inferences: float = 0.0
    executions: float = 0.0


@dataclass(frozen=True)
class TritonStats:
    endpoint: str
    at: float
    models: Mapping[str, TritonModelCounters]
    gpu_utilization: float | None  # mean over the endpoint's GPUs; None: not reported


def stats_from_samples(samples: Sequence[promtext.Sample], endpoint: str,
                       at: float) -> TritonStats:
    names = {s.labels["model"] for s in samples if "model" in s.labels}

    def get(metric: str, model: str) -> float:
        return promtext.total(samples, metric, model=model) or 0.0

    models = {m: TritonModelCounters(get(PENDING, m), get(SUCCESS, m), get(QUEUE_US, m),
                                     get(INFERENCES, m), get(EXECUTIONS, m)) for m in names}
    gpus = promtext.select(samples, GPU_UTIL)
    util = sum(s.value for s in gpus) / len(gpus) if gpus else None
    return TritonStats(endpoint, at, models, util)


def batch_limit(model_config: Mapping[str, Any]) -> int | None:
    """The batch a model's executions can reach: largest preferred size, else max batch."""
    preferred = (model_config.get("dynamic_batching") or {}).get("preferred_batch_size") or []
    sizes = [int(x) for x in preferred if int(x) > 0]
    if sizes:
        return max(sizes)
    limit = int(model_config.get("max_batch_size") or 0)
    return limit if limit > 0 else None


@dataclass(frozen=True, slots=True)
class TritonReading:
    pending: Reading
    queue_time_s: Reading
    avg_batch: Reading
    batch_fill: Reading
    gpu_utilization: Reading
    endpoints: int  # endpoints with fresh numbers


@dataclass
class _Deltas:
    success: float = 0.0
    queue_us: float = 0.0
    inferences: float = 0.0
    executions: float = 0.0
    capacity: float = 0.0  # executions x batch limit, for the models with a known limit
    filled: float = 0.0  # inferences of those models


class TritonCollector:
    """The last two :class:`TritonStats` per endpoint, grouped by pool. Pure bookkeeping."""

    def __init__(self, stale_after_s: float = 10.0) -> None:
        self.stale_after_s = stale_after_s
        self._pool_of: dict[str, str] = {}
        self._history: dict[str, deque[TritonStats]] = {}

    def record(self, pool: str, stats: TritonStats) -> None:
        history = self._history.setdefault(stats.endpoint, deque(maxlen=2))
        if history and stats.at <= history[-1].at:
            return
        history.append(stats)
        self._pool_of[stats.endpoint] = pool

    def _fresh(self, pool: str, now: float) -> list[deque[TritonStats]]:
        return [h for ep, h in self._history.items() if self._pool_of.get(ep) == pool
                and h and now - h[-1].at <= self.stale_after_s]

    def read(self, pool: str, now: float, model: str | None = None,
             batch_limits: Mapping[str, int] | None = None) -> TritonReading:
        fresh = self._fresh(pool, now)
        if not fresh:
            gone = NoData(f"no Triton metrics from pool {pool!r} newer than "
                          f"{self.stale_after_s:g}s")
            return TritonReading(gone, gone, gone, gone, gone, 0)
        pending = sum(c.pending for h in fresh for m, c in h[-1].models.items()
                      if model is None or m == model)
        d = self._deltas(fresh, model, batch_limits or {})
        return TritonReading(float(pending), *self._ratios(d, len(fresh)),
                             self._gpu(fresh), len(fresh))

    @staticmethod
    def _deltas(fresh: list[deque[TritonStats]], model: str | None,
                limits: Mapping[str, int]) -> _Deltas | None:
        d, measured = _Deltas(), False
        for h in fresh:
            if len(h) < 2:
                continue
            measured = True
            before, now = h[0], h[1]
            for name, c in now.models.items():
                if model is not None and name != model:
                    continue
                b = before.models.get(name, TritonModelCounters())
                executions = promtext.counter_delta(b.executions, c.executions)
                inferences = promtext.counter_delta(b.inferences, c.inferences)
                d.success += promtext.counter_delta(b.success, c.success)
                d.queue_us += promtext.counter_delta(b.queue_us, c.queue_us)
                d.inferences += inferences
                d.executions += executions
                if name in limits:
                    d.capacity += executions * limits[name]
                    d.filled += inferences
        return d if measured else None

    @staticmethod
    def _ratios(d: _Deltas | None, endpoints: int) -> tuple[Reading, Reading, Reading]:
        if d is None:
            first = NoData("need two scrapes for a rate")
            return first, first, first
        idle = NoData("no requests between the last two scrapes", idle=True)
        queue_time: Reading = d.queue_us / d.success / 1e6 if d.success > 0 else idle
        avg_batch: Reading = d.inferences / d.executions if d.executions > 0 else idle
        fill: Reading
        if d.capacity > 0:
            fill = d.filled / d.capacity
        elif d.executions > 0:
            fill = NoData("batch limits unknown for these models")
        else:
            fill = idle
        return queue_time, avg_batch, fill

    @staticmethod
    def _gpu(fresh: list[deque[TritonStats]]) -> Reading:
        utils = [h[-1].gpu_utilization for h in fresh if h[-1].gpu_utilization is not None]
        if not utils:
            return NoData("no nv_gpu_utilization (Triton without GPU metrics)")
        return sum(u for u in utils if u is not None) / len(utils)


def metrics_endpoints(config: Config) -> dict[str, tuple[str, str]]:
    """``metrics address -> (pool, http address)`` for every endpoint that has one."""
    return {ep.metrics: (name, ep.http) for name, pool in config.pools.items()
            for ep in pool.endpoints if ep.metrics is not None}


class TritonScraper:
    """Scrapes every endpoint's ``/metrics`` into a :class:`TritonCollector`."""

    def __init__(self, endpoints: Mapping[str, tuple[str, str]], collector: TritonCollector,
                 client: httpx.AsyncClient, timeout_s: float = 1.0) -> None:
        self.endpoints = dict(endpoints)
        self.collector = collector
        self.client = client
        self.timeout_s = timeout_s
        self.batch_limits: dict[str, int] = {}

    async def scrape(self, now: float) -> list[SignalError]:
        results = await asyncio.gather(*(self._one(m, pool, now)
                                         for m, (pool, _) in self.endpoints.items()))
        return [r for r in results if r is not None]

    async def _one(self, address: str, pool: str, now: float) -> SignalError | None:
        url = metrics_url(address)
        try:
            samples = promtext.parse(await get_text(self.client, url, self.timeout_s), url)
        except SignalError as exc:
            return exc
        self.collector.record(pool, stats_from_samples(samples, address, now))
        return None

    async def learn_batch_limit(self, http_address: str, model: str) -> int | None:
        """Fetch (once) a model's batch limit from ``/v2/models/<model>/config``."""
        if model not in self.batch_limits:
            base = http_address if "://" in http_address else f"http://{http_address}"
            doc = await get_json(self.client, f"{base}/v2/models/{model}/config",
                                 self.timeout_s)
            limit = batch_limit(doc) if isinstance(doc, dict) else None
            if limit is None:
                return None
            self.batch_limits[model] = limit
        return self.batch_limits[model]
