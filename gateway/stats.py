"""Merge Triton ``/v2/models[/m]/stats`` documents from every endpoint of a pool.

Where it sits: off the hot path, behind the statistics endpoint of both fronts (REST here,
gRPC through :mod:`gateway.grpc.stats`, which turns messages into these documents and back). A
pool is one logical server to the client, so its statistics are the sum over its endpoints:
counters and durations add up, ``last_inference`` is the latest, batch statistics add up per
batch size and response statistics per key; other lists (``memory_usage``) and strings are
the first endpoint's. Entries are keyed by (name, version).
"""

from __future__ import annotations

from typing import Any


def _add(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if key == "last_inference":
            into[key] = max(into.get(key, 0), value)
        elif isinstance(value, bool) or key in ("name", "version", "batch_size"):
            into.setdefault(key, value)
        elif isinstance(value, int | float):
            into[key] = into.get(key, 0) + value
        elif isinstance(value, dict):
            _add(into.setdefault(key, {}), value)
        elif key == "batch_stats" and isinstance(value, list):
            by_size = {b.get("batch_size"): b for b in into.setdefault(key, [])}
            for item in value:
                mine = by_size.get(item.get("batch_size"))
                if mine is None:
                    into[key].append(_copy(item))
                else:
                    _add(mine, item)
        else:
            into.setdefault(key, value)


def _copy(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _add(out, doc)
    return out


def merge_model_stats(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """``[{model_stats: [...]}, ...]`` -> one ``{model_stats: [...]}``, keyed by name+version."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in docs:
        for entry in doc.get("model_stats", []):
            key = (str(entry.get("name", "")), str(entry.get("version", "")))
            if key in merged:
                _add(merged[key], entry)
            else:
                merged[key] = _copy(entry)
    def order(key: tuple[str, str]) -> tuple[str, int, str]:
        name, version = key
        return (name, int(version) if version.isdigit() else -1, version)

    return {"model_stats": [merged[k] for k in sorted(merged, key=order)]}
