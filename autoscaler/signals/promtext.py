"""The Prometheus text format: parse a scrape into samples, select them, take deltas.

Where it sits: under every scraping signal reader (gateway ``/metrics``, Triton ``/metrics``,
DCGM exporter). Parsing uses prometheus-client's own parser; its errors become
:class:`~autoscaler.errors.ParseError`. Counters are looked up by their family name: the
parser reports Triton's ``nv_inference_request_success`` as
``nv_inference_request_success_total``, and both spellings match. Pure functions only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from autoscaler.errors import ParseError
from router.quantile import bucket_quantile


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse(text: str, source: str = "<metrics>") -> list[Sample]:
    """Every sample of a scrape (``_created`` timestamps left out)."""
    try:
        return [Sample(s.name, dict(s.labels), float(s.value))
                for family in text_string_to_metric_families(text)
                for s in family.samples if not s.name.endswith("_created")]
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ParseError(source, f"not Prometheus text format: {exc}") from exc


def matches(sample: Sample, name: str, labels: Mapping[str, str]) -> bool:
    if sample.name != name and sample.name != name + "_total":
        return False
    return all(sample.labels.get(k) == v for k, v in labels.items())


def select(samples: Iterable[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples if matches(s, name, labels)]


def total(samples: Iterable[Sample], name: str, **labels: str) -> float | None:
    """Sum of the matching samples; None when there is none (absent is not zero)."""
    found = select(samples, name, **labels)
    return sum(s.value for s in found) if found else None


def sum_by(samples: Iterable[Sample], name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """Sum of ``name`` grouped by the values of ``keys`` (a missing label reads as "")."""
    out: dict[tuple[str, ...], float] = {}
    for s in select(samples, name):
        key = tuple(s.labels.get(k, "") for k in keys)
        out[key] = out.get(key, 0.0) + s.value
    return out


def counter_delta(before: float, now: float) -> float:
    """Increase of a counter; a decrease means it restarted from zero."""
    return now - before if now >= before else now


def parse_le(text: str) -> float:
    return math.inf if text in ("+Inf", "Inf", "+inf", "inf") else float(text)


def buckets_delta(before: Sequence[tuple[float, float]],
                  now: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Cumulative bucket counts gained between two snapshots of the same histogram.

    A restart (any count lower than before) or a change of bounds takes ``now`` as the delta.
    """
    if [b for b, _ in before] != [b for b, _ in now] or any(
            n < b for (_, b), (_, n) in zip(before, now, strict=True)):
        return list(now)
    return [(le, n - b) for (le, b), (_, n) in zip(before, now, strict=True)]


def add_buckets(a: Sequence[tuple[float, float]],
                b: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Bucket-wise sum of two cumulative histograms (bounds merged; missing bounds are
    filled from the next lower bound, which keeps the sum cumulative)."""
    bounds = sorted({le for le, _ in a} | {le for le, _ in b})
    return [(le, _at(a, le) + _at(b, le)) for le in bounds]


def _at(buckets: Sequence[tuple[float, float]], le: float) -> float:
    count = 0.0
    for bound, n in buckets:
        if bound > le:
            break
        count = n
    return count


def quantile(q: float, cumulative: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus ``histogram_quantile`` over cumulative ``(le, count)`` buckets."""
    if not cumulative:
        return None
    per_bucket = [n - prev for (_, n), prev in
                  zip(cumulative, [0.0, *(n for _, n in cumulative[:-1])], strict=True)]
    bounds = [le for le, _ in cumulative if not math.isinf(le)]
    if len(bounds) == len(cumulative):  # no +Inf bucket: an empty one
        per_bucket.append(0.0)
    return bucket_quantile(q, bounds, per_bucket)
