"""Traffic splits: which variant of a model serves a request, and whether to shadow it.

Where it sits: after the route table found a model that has a split, the front door extracts
the pin header and the sticky key (REST headers or gRPC metadata) and calls
:func:`choose_variant`; the chosen variant's target (model, version, pool) is what gets called.

- A pin (``x-servegate-variant: canary``) forces a variant; an unknown name raises
  :class:`UnknownVariant` (a 400), never a silent fallback.
- With a sticky key, the variant is chosen by weighted rendezvous hashing: each variant scores
  ``-ln(u(key, variant)) / weight`` and the lowest wins. Raising one variant's weight only moves
  keys *to* that variant, and moves the expected share difference and nothing more (10% -> 20%
  moves ~10% of keys, all to the canary).
- Without a key, a weighted random draw per request (``u`` in [0, 1) comes from the caller).

Randomness and weights come in as arguments; nothing here reads a clock or keeps state.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from router.errors import RouteError

_TWO64 = float(2**64)


class UnknownVariant(RouteError):
    def __init__(self, model: str, name: str, known: list[str]) -> None:
        self.model = model
        self.name = name
        super().__init__(f"unknown variant {name!r} for model '{model}'; "
                         f"variants: {', '.join(known)}")


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float
    model: str
    version: str  # "" = the target's default version
    pool: str


@dataclass(frozen=True, slots=True)
class Shadow:
    variant: Variant
    percent: float
    max_concurrency: int


@dataclass(frozen=True, slots=True)
class Split:
    model: str
    variants: tuple[Variant, ...]  # serving variants (the shadow-only target excluded)
    baseline: str
    sticky_header: str | None
    pin_header: str
    shadow: Shadow | None
    by_name: Mapping[str, Variant]  # every variant, the shadow one included

    def weights(self) -> dict[str, float]:
        return {v.name: v.weight for v in self.variants}

    def with_weights(self, weights: Mapping[str, float]) -> Split:
        """The same split with some weights replaced (names must exist; checked by caller)."""
        variants = tuple(replace(v, weight=float(weights.get(v.name, v.weight)))
                         for v in self.variants)
        by_name = dict(self.by_name)
        by_name.update({v.name: v for v in variants})
        return replace(self, variants=variants, by_name=by_name)


def _unit(key: bytes) -> float:
    """A stable uniform number in (0, 1) for ``key``."""
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return (h + 0.5) / _TWO64


def sticky_variant(split: Split, key: str) -> Variant:
    """Weighted rendezvous hashing of ``key`` over the serving variants with weight > 0."""
    best: Variant | None = None
    best_score = math.inf
    raw = key.encode()
    for v in split.variants:
        if v.weight <= 0:
            continue
        score = -math.log(_unit(raw + b"\x00" + v.name.encode())) / v.weight
        if score < best_score:
            best, best_score = v, score
    assert best is not None, "a split always has a variant with weight > 0"
    return best


def weighted_variant(split: Split, u: float) -> Variant:
    """The variant whose cumulative weight interval contains ``u`` (0 <= u < 1)."""
    total = sum(v.weight for v in split.variants)
    point = u * total
    last = split.variants[0]
    for v in split.variants:
        if v.weight <= 0:
            continue
        last = v
        if point < v.weight:
            return v
        point -= v.weight
    return last


def choose_variant(split: Split, pin: str | None, sticky_key: str | None, u: float) -> Variant:
    if pin is not None:
        v = split.by_name.get(pin)
        if v is None:
            raise UnknownVariant(split.model, pin, sorted(split.by_name))
        return v
    if sticky_key:
        return sticky_variant(split, sticky_key)
    return weighted_variant(split, u)


def should_shadow(split: Split, u: float) -> Variant | None:
    """The shadow variant when this request (draw ``u`` in [0, 1)) is to be mirrored."""
    if split.shadow is None or u * 100.0 >= split.shadow.percent:
        return None
    return split.shadow.variant
