"""Signals: what the collector reads at the edge (I/O here, typed "no data" out).

Gateway stats (``/metrics`` scrape or Redis), Triton ``/metrics``, and GPU utilization
(DCGM exporter, Prometheus API, NVML). Each source has a pure part (parsing, deltas,
windows-free readings) and a thin async reader; a missing or stale signal is a
:class:`autoscaler.policy.NoData`, never a zero.
"""
