"""Merge ``ModelStatisticsResponse`` messages from every endpoint of a pool (gRPC).

Where it sits: off the hot path, behind the ModelStatistics RPC; the protobuf twin of
:mod:`gateway.stats` with the same rules. A pool is one logical server to the client, so its
statistics are the sum over its endpoints: counters and durations add up, ``last_inference`` is
the latest, batch statistics add up per batch size, response statistics per key; other repeated
entries (``memory_usage``) are the first endpoint's. Entries are keyed by (name, version).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message
from tritonclient.grpc import service_pb2 as pb

_KEEP_FIRST = ("name", "version", "batch_size")


def _add(into: Any, other: Message) -> None:
    for field, value in other.ListFields():
        name = field.name
        if isinstance(value, Message):
            _add(getattr(into, name), value)
        elif field.message_type is not None:
            _add_repeated(into, name, field, value)
        elif name == "last_inference":
            setattr(into, name, max(getattr(into, name), value))
        elif name in _KEEP_FIRST or isinstance(value, bool | str | bytes):
            if not getattr(into, name):
                setattr(into, name, value)
        elif isinstance(value, int | float):
            setattr(into, name, getattr(into, name) + value)


def _add_repeated(into: Any, name: str, field: Any, value: Any) -> None:
    target = getattr(into, name)
    if field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        for key, item in value.items():
            if value_field.message_type is not None:
                _add(target[key], item)
            else:
                target[key] += item
    elif name == "batch_stats":
        mine = {b.batch_size: b for b in target}
        for item in value:
            if item.batch_size in mine:
                _add(mine[item.batch_size], item)
            else:
                target.add().CopyFrom(item)
    elif not target:
        target.extend(value)


def merge_statistics(responses: Iterable[pb.ModelStatisticsResponse]) -> pb.ModelStatisticsResponse:
    merged: dict[tuple[str, str], pb.ModelStatistics] = {}
    for response in responses:
        for entry in response.model_stats:
            key = (entry.name, entry.version)
            if key in merged:
                _add(merged[key], entry)
            else:
                merged[key] = pb.ModelStatistics()
                merged[key].CopyFrom(entry)

    def order(key: tuple[str, str]) -> tuple[str, int, str]:
        name, version = key
        return (name, int(version) if version.isdigit() else -1, version)

    return pb.ModelStatisticsResponse(model_stats=[merged[k] for k in sorted(merged, key=order)])
