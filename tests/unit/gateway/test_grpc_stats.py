"""gateway.grpc.stats.merge_statistics agrees with the REST merge (gateway.stats)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb

from gateway.grpc.stats import merge_statistics
from gateway.stats import merge_model_stats


def duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def entry(name: str, version: str, n: int, last: int,
          batch: tuple[tuple[int, int], ...] = ()) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "last_inference": last,
        "inference_count": 10 * n,
        "execution_count": 4 * n,
        "inference_stats": {
            "success": duration(n, 1000 * n),
            "queue": duration(n, 100 * n),
            "compute_infer": duration(n, 700 * n),
        },
        "batch_stats": [
            {"batch_size": size, "compute_infer": duration(count, 70 * count)}
            for size, count in batch
        ],
        "response_stats": {
            "0": {"success": duration(n, 5 * n), "compute_infer": duration(n, 9 * n)},
        },
        "memory_usage": [{"type": "CPU", "id": 0, "byte_size": 1000 * n}],
    }


def as_proto(doc: dict[str, Any]) -> pb.ModelStatisticsResponse:
    return json_format.ParseDict(doc, pb.ModelStatisticsResponse())


DOCS = [
    {"model_stats": [entry("m", "1", 1, 100, ((1, 3), (4, 1))), entry("a", "2", 1, 7)]},
    {"model_stats": [entry("m", "1", 2, 300, ((4, 2), (8, 1))), entry("m", "10", 1, 5)]},
    {"model_stats": [entry("m", "1", 3, 200), entry("a", "2", 5, 3)]},
    {"model_stats": []},
]


def test_same_result_as_the_rest_merge() -> None:
    assert merge_statistics(as_proto(d) for d in DOCS) == as_proto(merge_model_stats(DOCS))


def test_sums_keeps_latest_and_first() -> None:
    merged = merge_statistics(as_proto(d) for d in DOCS)
    assert [(s.name, s.version) for s in merged.model_stats] == [
        ("a", "2"), ("m", "1"), ("m", "10")]
    m = merged.model_stats[1]
    assert m.inference_count == 60 and m.execution_count == 24
    assert m.last_inference == 300
    assert (m.inference_stats.success.count, m.inference_stats.success.ns) == (6, 6000)
    assert {b.batch_size: b.compute_infer.count for b in m.batch_stats} == {1: 3, 4: 3, 8: 1}
    assert m.response_stats["0"].success.count == 6
    assert [u.byte_size for u in m.memory_usage] == [1000]  # the first endpoint's


def test_inputs_are_not_modified() -> None:
    protos = [as_proto(d) for d in DOCS]
    before = [p.SerializeToString(deterministic=True) for p in protos]
    merge_statistics(protos)
    assert [p.SerializeToString(deterministic=True) for p in protos] == before


def test_empty() -> None:
    assert merge_statistics([]) == pb.ModelStatisticsResponse()
