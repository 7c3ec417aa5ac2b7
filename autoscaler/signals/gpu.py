"""GPU utilization (0..1) for a pool: DCGM exporter, a Prometheus query, or local NVML.

Where it sits: the collector's GPU source, one of three (configured under
``autoscaling.signals``); Triton's own ``nv_gpu_utilization`` comes with :mod:`.triton`.

- **DCGM exporter** ``/metrics``: ``DCGM_FI_DEV_GPU_UTIL`` (percent, REFERENCE §5) averaged
  over the GPUs whose pod matches the pool's pods (``pod``/``namespace`` labels, or
  ``exported_pod``/``exported_namespace`` when Prometheus relabelled them).
- **Prometheus HTTP API**: ``GET /api/v1/query``; the query must give utilization in 0..1
  (a vector is averaged), e.g. ``avg(DCGM_FI_DEV_GPU_UTIL{pod=~"triton-.*"}) / 100``.
- **NVML** through nvidia-ml-py, imported only when asked for: no package or no GPU reads as
  :class:`NoData`, never as 0.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import Any

import httpx

from autoscaler.errors import SignalError
from autoscaler.policy.spec import NoData, Reading
from autoscaler.signals import promtext
from autoscaler.signals.http import get_json, get_text

DCGM_UTIL = "DCGM_FI_DEV_GPU_UTIL"


def _label(sample: promtext.Sample, name: str) -> str:
    return sample.labels.get(name) or sample.labels.get(f"exported_{name}", "")


def dcgm_utilization(samples: Sequence[promtext.Sample], pod: re.Pattern[str] | None = None,
                     namespace: str | None = None) -> Reading:
    """Mean ``DCGM_FI_DEV_GPU_UTIL`` / 100 over the GPUs of matching pods."""
    chosen = [s for s in promtext.select(samples, DCGM_UTIL)
              if (pod is None or pod.fullmatch(_label(s, "pod")))
              and (namespace is None or _label(s, "namespace") == namespace)]
    if not chosen:
        return NoData(f"no {DCGM_UTIL} for the pool's pods")
    return sum(s.value for s in chosen) / len(chosen) / 100.0


def prometheus_value(doc: Any) -> Reading:
    """The mean value of a Prometheus ``/api/v1/query`` answer (vector or scalar)."""
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        return NoData(f"Prometheus query failed: {error or 'unexpected answer'}")
    data: Any = doc.get("data") or {}
    kind: Any = data.get("resultType")
    result: Any = data.get("result")
    try:
        if kind == "scalar":
            values = [float(result[1])]
        elif kind == "vector":
            values = [float(r["value"][1]) for r in result]
        else:
            return NoData(f"Prometheus answered a {kind!r}, expected a vector or scalar")
    except (TypeError, KeyError, IndexError, ValueError):
        return NoData("Prometheus answered an unreadable result")
    values = [v for v in values if v == v]  # NaN is no data
    return sum(values) / len(values) if values else NoData("the query returned no series")


async def scrape_dcgm(client: httpx.AsyncClient, url: str, timeout_s: float,
                      pod: re.Pattern[str] | None = None,
                      namespace: str | None = None) -> Reading:
    try:
        samples = promtext.parse(await get_text(client, url, timeout_s), url)
    except SignalError as exc:
        return NoData(str(exc))
    return dcgm_utilization(samples, pod, namespace)


async def query_prometheus(client: httpx.AsyncClient, base_url: str, query: str,
                           timeout_s: float) -> Reading:
    url = base_url.rstrip("/") + "/api/v1/query"
    try:
        doc = await get_json(client, url, timeout_s, params={"query": query})
    except SignalError as exc:
        return NoData(str(exc))
    return prometheus_value(doc)


def nvml_utilization(indices: Sequence[int] | None = None) -> Reading:
    """Mean utilization of the local GPUs (all, or ``indices``) through NVML."""
    try:
        import pynvml  # nvidia-ml-py; optional
    except ImportError:
        return NoData("nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return NoData(f"NVML unavailable: {exc}")
    try:
        count = pynvml.nvmlDeviceGetCount()
        chosen = list(indices) if indices is not None else list(range(count))
        if not chosen or max(chosen) >= count:
            return NoData(f"no such GPU: {chosen} of {count}")
        utils = [pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(i)).gpu
                 for i in chosen]
        return sum(float(u) for u in utils) / len(utils) / 100.0
    except pynvml.NVMLError as exc:
        return NoData(f"NVML error: {exc}")
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
