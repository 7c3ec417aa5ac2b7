"""Bad-input checks of the REST front door that need no server: body framing, declared shapes,
the body deadline, and how the errors they raise are answered (HTTP and gRPC)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from gateway.errors import BadRequest, PayloadTooLarge, RequestTimeout
from gateway.grpc.errors import MAX_DETAILS_BYTES, grpc_status
from gateway.http.asgi import read_body
from gateway.http.errors import error_response
from gateway.http.validate import check_infer_body
from router import UnknownModel

BODY = b'{"inputs":[{"name":"DATA","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return scope(**values)["headers"]  # type: ignore[no-any-return]


def scope(**headers: str) -> dict[str, Any]:
    return {"headers": [(k.replace("_", "-").lower().encode(), v.encode())
                        for k, v in headers.items()]}


@pytest.mark.parametrize("value", ["0", "10", str(len(BODY)), " 12 "])
def test_header_within_the_body_passes(value: str) -> None:
    check_infer_body(headers(inference_header_content_length=value), BODY, "infer")


@pytest.mark.parametrize(("value", "fragment"), [
    (str(len(BODY) + 1), "past the end"),
    ("-1", "invalid"), ("+5", "invalid"), ("abc", "invalid"), ("", "invalid"),
    ("1.5", "invalid"), ("0x10", "invalid"), ("9" * 21, "invalid"),
])
def test_header_that_cannot_frame_the_body_is_refused(value: str, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        check_infer_body(headers(inference_header_content_length=value), BODY, "generate")


def test_compressed_body_header_counts_uncompressed_bytes() -> None:
    check_infer_body(headers(inference_header_content_length="100000", content_encoding="gzip"),
                     b"\x1f\x8b...", "infer")
    with pytest.raises(BadRequest):
        check_infer_body(headers(inference_header_content_length="x", content_encoding="gzip"),
                         b"\x1f\x8b...", "infer")


def _infer(shape: str, data: str = "[1]") -> bytes:
    return b'{"inputs":[{"name":"D","shape":' + shape.encode() + \
        b',"datatype":"FP32","data":' + data.encode() + b"}]}"


@pytest.mark.parametrize("body", [
    BODY,
    _infer("[]"),  # a scalar
    _infer("[0, 99999999999]", "[]"),  # empty: zero elements whatever the other dims
    _infer("[1, -1]"), _infer("[1.5]"), _infer('["x"]'),  # Triton refuses these itself
    b'{"parameters":{"shape":"[1,100000000]"},' + BODY[1:],  # a string value, not a shape
    b'{"inputs":[{"name":"\\"shape\\": [1,100000000]","shape":[1],"data":[1]}]}',  # escaped
])
def test_shapes_the_body_can_carry_pass(body: bytes) -> None:
    check_infer_body(headers(), body, "infer")


@pytest.mark.parametrize("shape", [
    "[1, 100000000]", "[2305843009213693951, 167137]", "[ 1000 ,\n 1000 ]",
    "[" + ",".join(["99999"] * 10_000) + "]",  # stops as soon as the product is past
])
def test_shape_declaring_more_elements_than_bytes_is_refused(shape: str) -> None:
    body = _infer(shape)
    with pytest.raises(BadRequest, match="declares more elements"):
        check_infer_body(headers(), body, "infer")
    # generate bodies are not tensors: a field named shape is the model's business
    check_infer_body(headers(), body, "generate")


def test_only_the_json_part_of_a_binary_body_is_searched() -> None:
    head = b'{"inputs":[{"name":"D","shape":[1,4],"datatype":"FP32",' \
           b'"parameters":{"binary_data_size":16}}]}'
    tensor = b'"shape":[1,100000000]'.ljust(16, b" ")[:16]  # tensor bytes that look like JSON
    body = head + tensor
    check_infer_body(headers(inference_header_content_length=str(len(head))), body, "infer")
    big = head.replace(b"[1,4]", b"[1,400]")
    with pytest.raises(BadRequest, match="declares more elements"):
        check_infer_body(headers(inference_header_content_length=str(len(big))),
                         big + tensor, "infer")


def test_compressed_body_is_not_searched() -> None:
    check_infer_body(headers(content_encoding="gzip"), _infer("[1, 100000000]"), "infer")


# --------------------------------------------------------------------------- body deadline


def _receiver(chunks: list[bytes], gap_s: float) -> Any:
    async def receive() -> dict[str, Any]:
        await asyncio.sleep(gap_s)
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
    return receive


async def test_body_arriving_in_time_is_read() -> None:
    body = await read_body(scope(), _receiver([b"ab", b"cd"], 0.0), 100, timeout_s=1.0)
    assert body == b"abcd"


async def test_one_deadline_for_the_whole_body() -> None:
    # every read is quick (20 ms) but the body as a whole is not (10 reads > 100 ms)
    receive = _receiver([b"x"] * 10, 0.02)
    with pytest.raises(RequestTimeout, match=r"within 0\.1 s"):
        await read_body(scope(), receive, 100, timeout_s=0.1)


async def test_size_limit_still_comes_first() -> None:
    with pytest.raises(PayloadTooLarge):
        await read_body(scope(content_length="101"), _receiver([], 10.0), 100, timeout_s=0.1)


# --------------------------------------------------------------------------- answers


def test_request_timeout_is_408_and_closes_the_connection() -> None:
    status, headers, body = error_response(RequestTimeout(1.0))
    assert status == 408 and (b"connection", b"close") in headers
    assert json.loads(body) == {"error": "the request body did not arrive within 1 s"}
    assert grpc_status(RequestTimeout(1.0))[0] == grpc.StatusCode.DEADLINE_EXCEEDED


def test_payload_too_large_closes_the_connection() -> None:
    assert (b"connection", b"close") in error_response(PayloadTooLarge(10))[1]


@pytest.mark.parametrize("name", ["a" * 10_000, "é" * 100_000, "\U0001f600" * 5_000])
def test_error_messages_echoing_input_are_bounded(name: str) -> None:
    _, _, body = error_response(UnknownModel(name))
    assert len(json.loads(body)["error"]) <= 1024 + 3
    code, details = grpc_status(UnknownModel(name))
    assert code == grpc.StatusCode.NOT_FOUND
    assert len(details.encode()) <= MAX_DETAILS_BYTES + 3 and details.endswith("...")
