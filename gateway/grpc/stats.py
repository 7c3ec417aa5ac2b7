"""``ModelStatisticsResponse`` messages from every endpoint of a pool, merged by the one
statistics merge (:func:`gateway.stats.merge_model_stats`) that the REST front uses too.

Where it sits: off the hot path, behind the ModelStatistics RPC. Each message becomes the
document Triton's REST statistics endpoint would have answered (field names as in the proto,
64-bit counters kept as integers), the documents are merged with the REST rules, and the result
is parsed back into a message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from tritonclient.grpc import service_pb2 as pb

from gateway.stats import merge_model_stats


def as_doc(message: Message) -> dict[str, Any]:
    """The message as a plain document (no string-encoded int64s, unlike ``MessageToDict``)."""
    return {field.name: _value(field, value) for field, value in message.ListFields()}


def _value(field: Any, value: Any) -> Any:
    if field.message_type is None:
        return list(value) if field.label == field.LABEL_REPEATED else value
    if field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        if value_field.message_type is None:
            return dict(value)
        return {key: as_doc(item) for key, item in value.items()}
    if field.label == field.LABEL_REPEATED:
        return [as_doc(item) for item in value]
    return as_doc(value)


def merge_statistics(responses: Iterable[pb.ModelStatisticsResponse]) -> pb.ModelStatisticsResponse:
    merged = merge_model_stats([as_doc(r) for r in responses])
    return json_format.ParseDict(merged, pb.ModelStatisticsResponse())
