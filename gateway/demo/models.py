"""Demo models: small numpy stand-ins shaped like real ones, bound into Triton by the worker.

- ``classifier``: a 2-layer MLP over 16 FP32 features -> softmax over 4 classes. The weights
  are seeded by the version, so version 2 is a different (retrained) classifier.
- ``embedder``: BYTES text -> 64-dim L2-normalised FP32 embedding (hashed bag of words).
- ``identity``: returns its FP32 input unchanged; used for large binary bodies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURES = 16
CLASSES = 4
EMBED_DIM = 64


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: Any
    shape: tuple[int, ...]


@dataclass(frozen=True)
class DemoModel:
    name: str
    version: int
    fn: Callable[..., dict[str, np.ndarray]]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 64


def mlp_weights(version: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + version)
    w1 = rng.normal(0, 0.5, (FEATURES, 32)).astype(np.float32)
    b1 = rng.normal(0, 0.1, (32,)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (32, CLASSES)).astype(np.float32)
    b2 = rng.normal(0, 0.1, (CLASSES,)).astype(np.float32)
    return w1, b1, w2, b2


def classify(x: np.ndarray, version: int) -> np.ndarray:
    """Reference implementation (tests compare Triton's answer with it)."""
    w1, b1, w2, b2 = mlp_weights(version)
    h = np.maximum(x.astype(np.float32) @ w1 + b1, 0)
    z = h @ w2 + b2
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def embed(texts: list[bytes]) -> np.ndarray:
    out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
    for row, text in enumerate(texts):
        for token in text.lower().split():
            h = int.from_bytes(hashlib.blake2b(token, digest_size=4).digest(), "little")
            out[row, h % EMBED_DIM] += 1.0 if h & 0x80000000 else -1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1, norms)


def _classifier(version: int) -> DemoModel:
    def fn(INPUT: np.ndarray) -> dict[str, np.ndarray]:
        probs = classify(INPUT, version)
        return {"PROBS": probs, "LABEL": probs.argmax(axis=-1).astype(np.int64)[:, None]}

    return DemoModel(
        "classifier", version, fn,
        (TensorSpec("INPUT", np.float32, (FEATURES,)),),
        (TensorSpec("PROBS", np.float32, (CLASSES,)), TensorSpec("LABEL", np.int64, (1,))),
    )


def _embedder() -> DemoModel:
    def fn(TEXT: np.ndarray) -> dict[str, np.ndarray]:
        return {"EMBEDDING": embed([bytes(t[0]) for t in TEXT])}

    return DemoModel(
        "embedder", 1, fn,
        (TensorSpec("TEXT", bytes, (1,)),),
        (TensorSpec("EMBEDDING", np.float32, (EMBED_DIM,)),),
    )


def _identity() -> DemoModel:
    def fn(DATA: np.ndarray) -> dict[str, np.ndarray]:
        return {"OUTPUT": DATA}

    return DemoModel(
        "identity", 1, fn,
        (TensorSpec("DATA", np.float32, (-1,)),),
        (TensorSpec("OUTPUT", np.float32, (-1,)),),
    )


def demo_models(names: list[str], classifier_version: int = 1) -> list[DemoModel]:
    factories: dict[str, Callable[[], DemoModel]] = {
        "classifier": lambda: _classifier(classifier_version),
        "embedder": _embedder,
        "identity": _identity,
    }
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise ValueError(f"unknown demo model(s) {unknown}; choose from {sorted(factories)}")
    return [factories[n]() for n in names]


ALL_MODELS = ["classifier", "embedder", "identity"]
