"""gateway.stats.merge_model_stats: a pool's statistics are the sum over its endpoints."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.stats import merge_model_stats


def duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def entry(
    name: str, version: str, n: int, last: int, batch: list[tuple[int, int]] | None = None
) -> dict[str, Any]:
    """A Triton-shaped model_stats entry scaled by ``n``; ``batch`` is [(batch_size, count)]."""
    return {
        "name": name,
        "version": version,
        "last_inference": last,
        "inference_count": 10 * n,
        "execution_count": 4 * n,
        "inference_stats": {
            "success": duration(n, 1000 * n),
            "fail": duration(0, 0),
            "queue": duration(n, 100 * n),
            "compute_input": duration(n, 10 * n),
            "compute_infer": duration(n, 700 * n),
            "compute_output": duration(n, 20 * n),
            "cache_hit": duration(0, 0),
            "cache_miss": duration(0, 0),
        },
        "response_stats": {},
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": duration(count, 10 * count),
                "compute_infer": duration(count, 70 * count),
                "compute_output": duration(count, 5 * count),
            }
            for size, count in (batch or [])
        ],
        "memory_usage": [],
    }


def test_empty() -> None:
    assert merge_model_stats([]) == {"model_stats": []}
    assert merge_model_stats([{}, {"model_stats": []}]) == {"model_stats": []}


def test_single_doc_is_copied_equal() -> None:
    doc = {"model_stats": [entry("m", "1", 2, 123, [(1, 3), (4, 1)])]}
    merged = merge_model_stats([doc])
    assert merged == doc
    assert merged["model_stats"][0] is not doc["model_stats"][0]


def test_sums_counters_and_durations() -> None:
    docs = [
        {"model_stats": [entry("m", "1", 1, 100)]},
        {"model_stats": [entry("m", "1", 2, 300)]},
        {"model_stats": [entry("m", "1", 3, 200)]},
    ]
    (m,) = merge_model_stats(docs)["model_stats"]
    assert (m["name"], m["version"]) == ("m", "1")
    assert m["inference_count"] == 60
    assert m["execution_count"] == 24
    stats = m["inference_stats"]
    assert stats["success"] == duration(6, 6000)
    assert stats["fail"] == duration(0, 0)
    assert stats["queue"] == duration(6, 600)
    assert stats["compute_infer"] == duration(6, 4200)
    assert stats["compute_output"] == duration(6, 120)


@pytest.mark.parametrize(
    ("lasts", "expected"),
    [
        ((100, 300, 200), 300),
        ((0, 0, 0), 0),
        ((0, 5, 0), 5),
        ((1_700_000_000_000, 0, 1), 1_700_000_000_000),
    ],
)
def test_last_inference_is_the_latest(lasts: tuple[int, ...], expected: int) -> None:
    docs = [{"model_stats": [entry("m", "1", 1, last)]} for last in lasts]
    assert merge_model_stats(docs)["model_stats"][0]["last_inference"] == expected


def test_batch_stats_merged_by_batch_size() -> None:
    docs = [
        {"model_stats": [entry("m", "1", 1, 1, [(1, 5), (8, 2)])]},
        {"model_stats": [entry("m", "1", 1, 1, [(8, 3), (4, 7)])]},
        {"model_stats": [entry("m", "1", 1, 1, [])]},
        {"model_stats": [entry("m", "1", 1, 1, [(1, 1)])]},
    ]
    (m,) = merge_model_stats(docs)["model_stats"]
    by_size = {b["batch_size"]: b for b in m["batch_stats"]}
    assert sorted(by_size) == [1, 4, 8]
    assert len(m["batch_stats"]) == 3  # one entry per batch size
    assert by_size[1]["compute_infer"] == duration(6, 420)
    assert by_size[8]["compute_infer"] == duration(5, 350)
    assert by_size[8]["compute_input"] == duration(5, 50)
    assert by_size[4]["compute_output"] == duration(7, 35)


def test_batch_stats_only_in_later_doc() -> None:
    first = entry("m", "1", 1, 1)
    del first["batch_stats"]
    docs = [{"model_stats": [first]}, {"model_stats": [entry("m", "1", 1, 1, [(2, 2)])]}]
    (m,) = merge_model_stats(docs)["model_stats"]
    assert m["batch_stats"] == [
        {"batch_size": 2, "compute_input": duration(2, 20), "compute_infer": duration(2, 140),
         "compute_output": duration(2, 10)}
    ]


def test_distinct_models_and_versions_kept_separate_and_sorted() -> None:
    docs = [
        {"model_stats": [entry("zeta", "1", 1, 1), entry("alpha", "2", 1, 1)]},
        {"model_stats": [entry("alpha", "1", 2, 1), entry("zeta", "1", 3, 1)]},
        {"model_stats": [entry("mid", "", 1, 1), entry("alpha", "2", 4, 1)]},
    ]
    merged = merge_model_stats(docs)["model_stats"]
    keys = [(m["name"], m["version"]) for m in merged]
    assert keys == [("alpha", "1"), ("alpha", "2"), ("mid", ""), ("zeta", "1")]
    counts = {(m["name"], m["version"]): m["inference_count"] for m in merged}
    assert counts == {("alpha", "1"): 20, ("alpha", "2"): 50, ("mid", ""): 10, ("zeta", "1"): 40}


def test_input_docs_not_mutated() -> None:
    docs = [
        {"model_stats": [entry("m", "1", 1, 100, [(1, 1), (2, 2)]), entry("n", "1", 1, 5)]},
        {"model_stats": [entry("m", "1", 2, 300, [(2, 1), (3, 3)])]},
        {"model_stats": [entry("m", "1", 3, 200, [(1, 4)])]},
    ]
    before = copy.deepcopy(docs)
    merged = merge_model_stats(docs)
    assert docs == before
    # and the result shares no mutable container with the inputs
    merged["model_stats"][0]["inference_stats"]["success"]["count"] = -1
    merged["model_stats"][0]["batch_stats"][0]["compute_infer"]["count"] = -1
    merged["model_stats"][0]["batch_stats"].append({"batch_size": 99})
    assert docs == before


def test_merge_is_order_independent_for_sums() -> None:
    docs = [
        {"model_stats": [entry("m", "1", 1, 10, [(1, 1)])]},
        {"model_stats": [entry("m", "1", 5, 30, [(1, 2), (2, 2)])]},
    ]
    a = merge_model_stats(docs)["model_stats"][0]
    b = merge_model_stats(list(reversed(docs)))["model_stats"][0]

    def norm(m: dict[str, Any]) -> dict[str, Any]:
        return {**m, "batch_stats": sorted(m["batch_stats"], key=lambda x: x["batch_size"])}

    assert norm(a) == norm(b)


def test_floats_and_unknown_fields() -> None:
    docs = [
        {"model_stats": [{"name": "m", "version": "1", "ratio": 0.5, "flag": True, "tag": "a"}]},
        {"model_stats": [{"name": "m", "version": "1", "ratio": 0.25, "flag": False, "tag": "b"}]},
    ]
    (m,) = merge_model_stats(docs)["model_stats"]
    assert m["ratio"] == 0.75
    assert m["flag"] is True  # booleans are not summed
    assert m["tag"] == "a"
