"""Demo models: small numpy stand-ins shaped like real ones, bound into Triton by the worker.

- ``classifier``: a 2-layer MLP over 16 FP32 features -> softmax over 4 classes. The weights
  are seeded by the version, so version 2 is a different (retrained) classifier.
- ``embedder``: BYTES text -> 64-dim L2-normalised FP32 embedding (hashed bag of words).
- ``identity``: returns its FP32 input unchanged; used for large binary bodies.
- ``streamer``: a decoupled model (gRPC streaming only): COUNT INT32 [1] -> COUNT responses,
  the i-th with INDEX INT32 [1] = i, optionally DELAY_MS apart; COUNT < 0 is an error.
- ``sleeper``: waits DELAY_MS INT32 [1] milliseconds, answers SLEPT_MS = DELAY_MS; for deadlines and
  cancellation.

``streamer`` and ``sleeper`` are not in the worker's default set (each model adds about 1.5 s to
a worker's start); tests that need them ask for them by name.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator
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
    optional: bool = False


@dataclass(frozen=True)
class DemoModel:
    name: str
    version: int
    fn: Callable[..., dict[str, np.ndarray]]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # 0: no batching; ``fn`` then takes PyTriton's list of requests instead of batched arrays
    max_batch_size: int = 64
    # decoupled (any number of responses per request): ``fn`` is a generator of response lists
    decoupled: bool = False
    # Triton priority levels of the dynamic batcher (default level 2 of 3), 0: none. Only the
    # sleeper has them: with Triton 2.51 a priority queue costs the fast models about half
    # their throughput and a ~500 ms p99 under load (measured with loadtest/bench_overhead.py).
    priority_levels: int = 0


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


@dataclass(frozen=True)
class Faults:
    """Injected misbehaviour for tests and demos: a share of batches fail, every batch is slow."""

    fail_rate: float = 0.0
    delay_ms: float = 0.0


def _classifier(version: int, faults: Faults = Faults(), name: str = "classifier") -> DemoModel:
    rng = random.Random(version)

    def fn(INPUT: np.ndarray) -> dict[str, np.ndarray]:
        if faults.delay_ms:
            time.sleep(faults.delay_ms / 1000)
        if faults.fail_rate and rng.random() < faults.fail_rate:
            raise RuntimeError(f"injected failure (classifier v{version}, "
                               f"fail rate {faults.fail_rate:g})")
        probs = classify(INPUT, version)
        return {"PROBS": probs, "LABEL": probs.argmax(axis=-1).astype(np.int64)[:, None]}

    return DemoModel(
        name, version, fn,
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


def _streamer() -> DemoModel:
    def fn(requests: list[Any]) -> Iterator[list[dict[str, np.ndarray]]]:
        # Without batching Triton hands over one request per execution, so one count rules.
        request = requests[0]
        count = int(request["COUNT"].reshape(-1)[0])
        delay = request.data.get("DELAY_MS")
        delay_s = float(delay.reshape(-1)[0]) / 1000 if delay is not None else 0.0
        if count < 0:
            raise ValueError(f"COUNT must be >= 0, got {count}")
        for i in range(count):
            if delay_s and i:
                time.sleep(delay_s)
            yield [{"INDEX": np.array([i], dtype=np.int32)} for _ in requests]

    return DemoModel(
        "streamer", 1, fn,
        (TensorSpec("COUNT", np.int32, (1,)),
         TensorSpec("DELAY_MS", np.int32, (1,), optional=True)),
        (TensorSpec("INDEX", np.int32, (1,)),),
        max_batch_size=0, decoupled=True,
    )


def _sleeper() -> DemoModel:
    def fn(DELAY_MS: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(float(DELAY_MS.max()) / 1000)
        return {"SLEPT_MS": DELAY_MS}

    return DemoModel(
        "sleeper", 1, fn,
        (TensorSpec("DELAY_MS", np.int32, (1,)),),
        (TensorSpec("SLEPT_MS", np.int32, (1,)),),
        max_batch_size=4,  # small batches keep a queue in Triton, where priorities show
        priority_levels=3,
    )


def demo_models(names: list[str], classifier_version: int = 1,
                faults: Faults = Faults()) -> list[DemoModel]:
    factories: dict[str, Callable[[], DemoModel]] = {
        "classifier": lambda: _classifier(classifier_version, faults),
        # The same classifier under another name, served by the demo's scale-to-zero pool.
        "cold-classifier": lambda: _classifier(classifier_version, faults, "cold-classifier"),
        "embedder": _embedder,
        "identity": _identity,
        "streamer": _streamer,
        "sleeper": _sleeper,
    }
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise ValueError(f"unknown demo model(s) {unknown}; choose from {sorted(factories)}")
    return [factories[n]() for n in names]


ALL_MODELS = ["classifier", "embedder", "identity"]
