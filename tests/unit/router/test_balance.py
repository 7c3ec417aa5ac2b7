"""router.balance.pick_endpoint: power of two choices on least outstanding requests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from random import Random

import pytest

from router import pick_endpoint


@dataclass(eq=False)  # identity semantics, as the gateway's Endpoint objects have
class Ep:
    name: str
    outstanding: int = 0
    admitted: bool = True

    def __repr__(self) -> str:
        return f"Ep({self.name}, {self.outstanding}, {self.admitted})"


class NoRandom(Random):
    """An rng that fails the test if pick_endpoint draws from it."""

    def random(self) -> float:
        raise AssertionError("rng must not be used")


def eps(*loads: int, admitted: tuple[bool, ...] | None = None) -> list[Ep]:
    flags = admitted or (True,) * len(loads)
    return [Ep(f"e{i}", load, ok) for i, (load, ok) in enumerate(zip(loads, flags, strict=True))]


def test_empty_pool_returns_none() -> None:
    assert pick_endpoint([], NoRandom()) is None


@pytest.mark.parametrize(
    ("admitted", "exclude_idx"),
    [
        ((False,), ()),
        ((False, False, False), ()),
        ((True,), (0,)),
        ((True, True), (0, 1)),
        ((True, False, True), (0, 2)),
    ],
)
def test_returns_none_when_nothing_is_left(
    admitted: tuple[bool, ...], exclude_idx: tuple[int, ...]
) -> None:
    pool = eps(*[0] * len(admitted), admitted=admitted)
    assert pick_endpoint(pool, NoRandom(), [pool[i] for i in exclude_idx]) is None


@pytest.mark.parametrize(
    ("loads", "admitted", "exclude_idx", "expected"),
    [
        ((5,), (True,), (), 0),
        ((0, 9), (False, True), (), 1),  # the only admitted one, however loaded
        ((0, 9), (True, True), (0,), 1),  # the only one not excluded
        ((0, 0, 9), (False, True, True), (1,), 2),
        ((1, 2, 3, 4), (True, False, False, True), (0,), 3),
    ],
)
def test_single_candidate_is_returned_without_randomness(
    loads: tuple[int, ...], admitted: tuple[bool, ...], exclude_idx: tuple[int, ...],
    expected: int,
) -> None:
    pool = eps(*loads, admitted=admitted)
    assert pick_endpoint(pool, NoRandom(), [pool[i] for i in exclude_idx]) is pool[expected]


@pytest.mark.parametrize("seed", range(5))
def test_skips_non_admitted_and_excluded(seed: int) -> None:
    rng = Random(seed)
    pool = eps(0, 0, 0, 0, 0, 0, admitted=(True, False, True, False, True, True))
    exclude = {pool[5]}
    seen = Counter(pick_endpoint(pool, rng, exclude) for _ in range(2000))
    assert set(seen) == {pool[0], pool[2], pool[4]}


def test_exclude_accepts_any_collection() -> None:
    pool = eps(0, 0, 0)
    for exclude in ([pool[0], pool[1]], (pool[0], pool[1]), {pool[0], pool[1]}):
        assert pick_endpoint(pool, Random(0), exclude) is pool[2]


@pytest.mark.parametrize(("a", "b"), [(0, 1), (3, 5), (7, 2), (100, 99)])
def test_less_loaded_of_two_always_wins(a: int, b: int) -> None:
    rng = Random(42)
    pool = eps(a, b)
    best = pool[0] if a < b else pool[1]
    for _ in range(1000):
        assert pick_endpoint(pool, rng) is best


def test_less_loaded_of_two_admitted_among_ejected() -> None:
    rng = Random(7)
    pool = eps(0, 4, 0, 2, admitted=(False, True, False, True))
    for _ in range(1000):
        assert pick_endpoint(pool, rng) is pool[3]


def test_tie_between_two_is_split() -> None:
    rng = Random(3)
    pool = eps(2, 2)
    seen = Counter(pick_endpoint(pool, rng) for _ in range(10_000))
    assert 4_500 <= seen[pool[0]] <= 5_500


@pytest.mark.parametrize("n", [2, 3, 4, 7, 16])
def test_uniform_over_equal_idle_endpoints(n: int) -> None:
    rng = Random(1234 + n)
    pool = eps(*[0] * n)
    picks = 20_000 * n
    seen = Counter(pick_endpoint(pool, rng) for _ in range(picks))
    assert set(seen) == set(pool)
    # expected 20_000 each; the standard deviation is < 142, so +-10% is > 14 sigma
    for ep in pool:
        assert 18_000 <= seen[ep] <= 22_000, (ep, seen[ep])


@pytest.mark.parametrize(
    "loads",
    [(0, 1, 9), (9, 1, 0), (1, 9, 0), (3, 3, 4), (0, 0, 0, 0, 1), (5, 4, 3, 2, 1, 0)],
)
def test_unique_most_loaded_is_never_picked(loads: tuple[int, ...]) -> None:
    # It is always compared with another candidate, and that one has fewer requests.
    rng = Random(99)
    pool = eps(*loads)
    worst = max(pool, key=lambda e: e.outstanding)
    seen = Counter(pick_endpoint(pool, rng) for _ in range(5000))
    assert worst not in seen
    assert sum(seen.values()) == 5000


def test_random_pools_property() -> None:
    # Over many random pools: the pick is admitted, not excluded, and never the unique maximum
    # of the candidates; and it is never more loaded than the least-loaded candidate would be
    # if there were only two.
    rng = Random(2024)
    gen = Random(1)
    for _ in range(3000):
        n = gen.randint(0, 8)
        pool = [Ep(f"e{i}", gen.randint(0, 5), gen.random() < 0.8) for i in range(n)]
        exclude = {e for e in pool if gen.random() < 0.2}
        cands = [e for e in pool if e.admitted and e not in exclude]
        pick = pick_endpoint(pool, rng, exclude)
        if not cands:
            assert pick is None
            continue
        assert pick in cands
        if len(cands) == 2:
            assert pick.outstanding == min(e.outstanding for e in cands)
        if len(cands) >= 2:
            top = max(e.outstanding for e in cands)
            if sum(e.outstanding == top for e in cands) == 1:
                assert pick.outstanding < top


def test_p2c_selection_probabilities_of_three() -> None:
    # With distinct loads, the least loaded wins both pairs it is drawn into (2/3), the middle
    # one wins one pair (1/3), the most loaded none.
    rng = Random(5)
    low, mid, high = pool = eps(0, 1, 2)
    seen = Counter(pick_endpoint(pool, rng) for _ in range(30_000))
    assert 19_000 <= seen[low] <= 21_000
    assert 9_000 <= seen[mid] <= 11_000
    assert seen[high] == 0


def test_deterministic_for_a_seed() -> None:
    pool = eps(0, 1, 0, 2, 0)
    ra, rb = Random(11), Random(11)
    a = [pick_endpoint(pool, ra) for _ in range(200)]
    b = [pick_endpoint(pool, rb) for _ in range(200)]
    assert a == b


def test_does_not_mutate_pool() -> None:
    pool = eps(3, 1, 2)
    before = [(e.name, e.outstanding, e.admitted) for e in pool]
    for _ in range(100):
        pick_endpoint(pool, Random(0), [pool[0]])
    assert [(e.name, e.outstanding, e.admitted) for e in pool] == before
