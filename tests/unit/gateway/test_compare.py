"""Shadow output diffing on V2 responses (JSON and binary, compressed or not)."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np

from gateway.traffic.compare import compare, decode_response


def _json(outputs: dict[str, tuple[str, list[int], list[object]]]) -> bytes:
    return json.dumps({"model_name": "m", "outputs": [
        {"name": n, "datatype": dt, "shape": shape, "data": data}
        for n, (dt, shape, data) in outputs.items()]}).encode()


def _binary(name: str, arr: np.ndarray, dtype: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    raw = arr.tobytes()
    header = json.dumps({"outputs": [{"name": name, "datatype": dtype, "shape": list(arr.shape),
                                      "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return [(b"inference-header-content-length", str(len(header)).encode())], header + raw


def test_json_and_binary_of_the_same_tensor_agree() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], dtype=np.float32)
    a = decode_response([], _json({"P": ("FP32", [2, 3], probs.ravel().tolist())}))
    headers, body = _binary("P", probs, "FP32")
    b = decode_response(headers, body)
    result = compare(a, b)
    assert result.agree and result.top1_agreement == 1.0 and result.max_abs_error < 1e-7


def test_argmax_flip_is_a_disagreement_with_error_sizes() -> None:
    a = decode_response([], _json({"P": ("FP32", [2, 3], [0.1, 0.7, 0.2, 0.6, 0.3, 0.1])}))
    b = decode_response([], _json({"P": ("FP32", [2, 3], [0.1, 0.2, 0.7, 0.6, 0.3, 0.1])}))
    result = compare(a, b)
    assert not result.agree and result.mismatched == ["P"]
    assert result.top1_agreement == 0.5
    assert abs(result.max_abs_error - 0.5) < 1e-6 and result.max_rel_error > 2


def test_small_numeric_noise_agrees() -> None:
    a = decode_response([], _json({"P": ("FP32", [1, 3], [0.1, 0.7, 0.2])}))
    b = decode_response([], _json({"P": ("FP32", [1, 3], [0.1001, 0.6999, 0.2])}))
    assert compare(a, b).agree


def test_bytes_outputs_compare_exactly_and_decode_binary() -> None:
    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"cat", b"dog"))
    header = json.dumps({"outputs": [{"name": "L", "datatype": "BYTES", "shape": [2],
                                      "parameters": {"binary_data_size": len(raw)}}]}).encode()
    b = decode_response([(b"inference-header-content-length", str(len(header)).encode())],
                        header + raw)
    a = decode_response([], _json({"L": ("BYTES", [2], ["cat", "dog"])}))
    assert b["L"].value == [b"cat", b"dog"] and compare(a, b).agree
    c = decode_response([], _json({"L": ("BYTES", [2], ["cat", "cow"])}))
    assert not compare(a, c).agree


def test_gzip_response_and_missing_outputs() -> None:
    body = _json({"P": ("FP32", [1, 2], [0.3, 0.7]), "Q": ("INT64", [1], [3])})
    a = decode_response([(b"content-encoding", b"gzip")], gzip.compress(body))
    b = decode_response([], _json({"P": ("FP32", [1, 2], [0.3, 0.7])}))
    result = compare(a, b)
    assert not result.agree and result.mismatched == ["Q"]
