"""Splits: weighted draws, sticky keys by rendezvous hashing, pins, shadow decisions."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from contracts import ConfigError, parse_config
from router import RouteTable
from router.splits import (
    Split,
    UnknownVariant,
    choose_variant,
    should_shadow,
    sticky_variant,
    weighted_variant,
)


def _config(weights: dict[str, float],
            shadow: dict[str, object] | None = None) -> dict[str, object]:
    variants: dict[str, object] = {
        "stable": {"weight": weights.get("stable", 90)},
        "canary": {"weight": weights.get("canary", 10), "version": 2},
        "shadow": {"weight": 0, "model": "clf-next", "pool": "gpu"},
    }
    split: dict[str, object] = {"variants": variants, "sticky_header": "X-User-Id"}
    if shadow:
        split["shadow"] = shadow
    return {
        "pools": {"cpu": {"endpoints": ["a:1"]}, "gpu": {"endpoints": ["b:1"]},
                  "canary": {"endpoints": ["c:1"]}},
        "models": {"clf": {"pool": "cpu", "versions": {"2": {"pool": "canary"}},
                           "split": split}},
    }


def _split(stable: float = 90, canary: float = 10, **kw: object) -> Split:
    split = RouteTable(parse_config(_config({"stable": stable, "canary": canary}, **kw))
                       ).lookup("clf").split
    assert split is not None
    return split


def test_variants_resolve_to_their_pools() -> None:
    split = _split()
    by = split.by_name
    assert (by["stable"].model, by["stable"].version, by["stable"].pool) == ("clf", "", "cpu")
    assert (by["canary"].model, by["canary"].version, by["canary"].pool) == ("clf", "2", "canary")
    assert (by["shadow"].model, by["shadow"].pool) == ("clf-next", "gpu")
    assert split.sticky_header == "x-user-id" and split.pin_header == "x-servegate-variant"
    assert split.baseline == "stable"


def test_explicit_version_is_never_split() -> None:
    table = RouteTable(parse_config(_config({})))
    assert table.lookup("clf").split is not None
    assert table.lookup("clf", "2").split is None and table.lookup("clf", "2").pool == "canary"
    assert table.lookup("clf", "1").split is None and table.lookup("clf", "1").pool == "cpu"


@pytest.mark.parametrize(("stable", "canary"), [(90, 10), (50, 50), (75, 25), (99, 1)])
def test_weighted_draws_match_weights_within_1_5_points(stable: float, canary: float) -> None:
    split = _split(stable, canary)
    rng = random.Random(7)
    counts = Counter(weighted_variant(split, rng.random()).name for _ in range(20_000))
    assert abs(counts["canary"] / 20_000 * 100 - canary / (stable + canary) * 100) <= 1.5
    assert "shadow" not in counts


@pytest.mark.parametrize(("stable", "canary"), [(90, 10), (50, 50), (80, 20)])
def test_sticky_keys_follow_weights_within_1_5_points(stable: float, canary: float) -> None:
    split = _split(stable, canary)
    counts = Counter(sticky_variant(split, f"user-{i}").name for i in range(20_000))
    assert abs(counts["canary"] / 20_000 * 100 - canary) <= 1.5


def test_sticky_is_stable_per_key() -> None:
    split = _split()
    for i in range(200):
        key = f"k{i}"
        assert len({sticky_variant(split, key).name for _ in range(3)}) == 1


def test_ramping_10_to_20_moves_only_new_keys_to_the_canary() -> None:
    before, after = _split(90, 10), _split(80, 20)
    keys = [f"user-{i}" for i in range(10_000)]
    moved = [(sticky_variant(before, k).name, sticky_variant(after, k).name) for k in keys
             if sticky_variant(before, k).name != sticky_variant(after, k).name]
    assert len(moved) <= 0.11 * len(keys)
    assert len(moved) >= 0.08 * len(keys)  # it does move the new share
    assert all(a == "stable" and b == "canary" for a, b in moved)


def test_weight_zero_is_never_chosen() -> None:
    split = _split(100, 0)
    assert {sticky_variant(split, f"k{i}").name for i in range(2000)} == {"stable"}
    assert {weighted_variant(split, i / 1000).name for i in range(1000)} == {"stable"}


def test_pin_forces_variant_and_unknown_pin_is_an_error() -> None:
    split = _split()
    assert choose_variant(split, "canary", "user-1", 0.0).name == "canary"
    assert choose_variant(split, "shadow", None, 0.0).name == "shadow"
    with pytest.raises(UnknownVariant) as err:
        choose_variant(split, "blue", None, 0.0)
    assert "blue" in str(err.value) and "canary" in str(err.value)


def test_choose_prefers_pin_then_sticky_then_draw() -> None:
    split = _split(50, 50)
    key = "user-42"
    assert choose_variant(split, None, key, 0.99).name == sticky_variant(split, key).name
    assert choose_variant(split, None, None, 0.0).name == "stable"
    assert choose_variant(split, None, None, 0.99).name == "canary"


def test_with_weights_changes_only_named_variants() -> None:
    split = _split().with_weights({"canary": 30})
    assert split.weights() == {"stable": 90.0, "canary": 30.0, "shadow": 0.0}
    assert split.by_name["canary"].weight == 30.0


def test_shadow_percentage() -> None:
    split = _split(shadow={"variant": "shadow", "percent": 10})
    assert [v.name for v in split.variants] == ["stable", "canary"]
    rng = random.Random(3)
    hits = sum(should_shadow(split, rng.random()) is not None for _ in range(20_000))
    assert abs(hits / 20_000 - 0.10) < 0.01
    assert should_shadow(_split(), 0.0) is None


@pytest.mark.parametrize(("mutate", "fragment"), [
    (lambda s: s.update(variants={}), "at least one variant"),
    (lambda s: s.update(baseline="nope"), "unknown variant 'nope'"),
    (lambda s: s.update(shadow={"variant": "nope", "percent": 5}), "unknown variant 'nope'"),
    (lambda s: s["variants"].update(stable={"weight": 0}, canary={"weight": 0}),
     "weight above 0"),
    (lambda s: s["variants"]["canary"].update(version="x"), "positive integer"),
    (lambda s: s["variants"]["canary"].update(pool="nowhere"), "unknown pool 'nowhere'"),
    (lambda s: s["variants"]["shadow"].pop("pool"), "no pool serves model 'clf-next'"),
])
def test_invalid_splits_are_rejected_with_their_path(mutate: object, fragment: str) -> None:
    doc = _config({})
    split = doc["models"]["clf"]["split"]  # type: ignore[index]
    mutate(split)  # type: ignore[operator]
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "s.yaml")
    text = "\n".join(err.value.problems)
    assert "models.clf.split" in text and fragment in text
