"""Shadow output diffing: decode two V2 inference responses and say how far apart they are.

Where it sits: off the client's path, in the shadow mirror, after both the primary and the
shadow responses are in (a sampled fraction of requests, with bounded concurrency). It decodes
the JSON header with the standard library and binary tensors with numpy
(``Inference-Header-Content-Length`` and ``Content-Encoding`` honoured).

For numeric outputs: max absolute and relative error, argmax (top-1) agreement and top-k set
agreement along the last axis; for BYTES/BOOL/BF16: exact match. A response pair *agrees* when
every numeric output agrees on top-1 (or, for outputs without a class axis, is close) and every
other output matches exactly.
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.adapters.upstream import Headers

_NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
_EXACT_ONLY = {"BOOL", "BYTES", "BF16"}
TOP_K = 3


@dataclass
class Output:
    datatype: str
    shape: tuple[int, ...]
    value: Any  # numpy array, or a list of bytes for BYTES


@dataclass
class Comparison:
    agree: bool
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    top1_agreement: float | None = None  # fraction of rows with the same argmax
    topk_agreement: float | None = None
    mismatched: list[str] = field(default_factory=list)


def _header(headers: Headers, name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def _decompress(headers: Headers, body: bytes) -> bytes:
    encoding = (_header(headers, b"content-encoding") or b"").strip().lower()
    if encoding == b"gzip":
        return gzip.decompress(body)
    if encoding == b"deflate":
        return zlib.decompress(body)
    return body


def _bytes_elements(raw: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(raw):
        (n,) = struct.unpack_from("<I", raw, i)
        out.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    return out


def decode_response(headers: Headers, body: bytes) -> dict[str, Output]:
    """The outputs of a V2 infer response; ``ValueError`` if it is not one."""
    body = _decompress(headers, body)
    hlen = _header(headers, b"inference-header-content-length")
    json_len = int(hlen) if hlen is not None else len(body)
    doc = json.loads(body[:json_len])
    offset = json_len
    outputs: dict[str, Output] = {}
    for out in doc.get("outputs", []):
        dtype, shape = out["datatype"], tuple(int(d) for d in out["shape"])
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = body[offset:offset + int(size)]
            offset += int(size)
            if dtype == "BYTES":
                value: Any = _bytes_elements(raw)
            elif dtype in _NUMPY:
                value = np.frombuffer(raw, dtype=_NUMPY[dtype]).reshape(shape)
            else:
                value = raw
        elif dtype == "BYTES":
            value = [d.encode() if isinstance(d, str) else bytes(d)
                     for d in np.asarray(out["data"], dtype=object).ravel()]
        elif dtype in _NUMPY:
            value = np.asarray(out["data"], dtype=_NUMPY[dtype]).reshape(shape)
        else:
            value = json.dumps(out["data"]).encode()
        outputs[out["name"]] = Output(dtype, shape, value)
    return outputs


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def compare(primary: dict[str, Output], shadow: dict[str, Output]) -> Comparison:
    result = Comparison(agree=True)
    top1: list[float] = []
    topk: list[float] = []
    for name, p in primary.items():
        s = shadow.get(name)
        if s is None or s.shape != p.shape or s.datatype != p.datatype:
            result.mismatched.append(name)
            continue
        if p.datatype in _EXACT_ONLY or p.datatype not in _NUMPY:
            same = (np.array_equal(p.value, s.value) if isinstance(p.value, np.ndarray)
                    else p.value == s.value)
            if not same:
                result.mismatched.append(name)
            continue
        a, b = p.value.astype(np.float64), s.value.astype(np.float64)
        if a.size == 0:
            continue
        diff = np.abs(a - b)
        result.max_abs_error = max(result.max_abs_error, float(diff.max()))
        denom = np.maximum(np.abs(a), 1e-12)
        result.max_rel_error = max(result.max_rel_error, float((diff / denom).max()))
        ra, rb = _rows(a), _rows(b)
        if ra.shape[1] > 1:
            agree = np.argmax(ra, axis=1) == np.argmax(rb, axis=1)
            top1.append(float(agree.mean()))
            k = min(TOP_K, ra.shape[1])
            ka = np.sort(np.argsort(-ra, axis=1)[:, :k], axis=1)
            kb = np.sort(np.argsort(-rb, axis=1)[:, :k], axis=1)
            topk.append(float((ka == kb).all(axis=1).mean()))
            if not agree.all():
                result.mismatched.append(name)
        elif not np.allclose(a, b, rtol=1e-3, atol=1e-5):
            result.mismatched.append(name)
    missing = [n for n in shadow if n not in primary]
    result.mismatched.extend(missing)
    result.top1_agreement = min(top1) if top1 else None
    result.topk_agreement = min(topk) if topk else None
    result.agree = not result.mismatched
    return result
