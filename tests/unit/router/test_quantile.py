from __future__ import annotations

import pytest

from router.quantile import bucket_quantile, delta

BOUNDS = (0.01, 0.02, 0.05, 0.1)


@pytest.mark.parametrize(("q", "counts", "expected"), [
    (0.5, [10, 0, 0, 0, 0], 0.005),
    (0.99, [0, 100, 0, 0, 0], 0.0199),
    (0.5, [50, 50, 0, 0, 0], 0.01),
    (0.99, [90, 0, 0, 10, 0], 0.095),
    (0.99, [0, 0, 0, 0, 5], 0.1),
    (1.0, [1, 1, 1, 1, 0], 0.1),
])
def test_bucket_quantile(q: float, counts: list[float], expected: float) -> None:
    got = bucket_quantile(q, BOUNDS, counts)
    assert got == pytest.approx(expected)


def test_no_observations_is_none() -> None:
    assert bucket_quantile(0.99, BOUNDS, [0, 0, 0, 0, 0]) is None


def test_delta_clamps_resets() -> None:
    assert delta([5, 3, 1], [2, 4, 0]) == [3, 0, 1]
