"""Bad input at both front doors, sent with raw sockets and a raw gRPC channel.

A real gateway in front of the session's real Triton pool, with a 1 s deadline for receiving a
request (``limits.body_timeout_s``: head and body, from the request's first byte). Every bad
request gets a clear answer (V2 error JSON with the right status, or the right gRPC status) and
nothing else breaks: other connections keep being served, Triton endpoints stay up, and no
request reaches Triton under another model's name.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb

from servegate.local.launch import TritonProcess
from tests.conftest import pool_config
from tests.harness import GatewayProcess, http_get, start_gateway

pytestmark = pytest.mark.integration

BODY_TIMEOUT_S = 1.0
IDENTITY = json.dumps({"inputs": [{"name": "DATA", "shape": [1, 4], "datatype": "FP32",
                                   "data": [1, 2, 3, 4]}]}).encode()
SERVICE = "/inference.GRPCInferenceService/"


@pytest.fixture(scope="module")
def strict_gateway(triton_pool: list[TritonProcess],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = pool_config(triton_pool)
    config["limits"]["body_timeout_s"] = BODY_TIMEOUT_S
    gw = start_gateway(config, tmp_path_factory.mktemp("bad-input-gateway"))
    yield gw
    gw.stop()


# --------------------------------------------------------------------------- raw HTTP


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool | None  # the server closed the connection after answering (if asked)

    def error(self) -> str:
        assert self.headers.get("content-type") == "application/json", self.headers
        doc = json.loads(self.body)
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str), doc
        return str(doc["error"])


def _connect(address: str, timeout: float = 10.0) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def _read_reply(sock: socket.socket, see_close: bool = False) -> Reply:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response head: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    size = int(headers.get("content-length", "0"))
    while len(body) < size:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a response body"
        body += chunk
    closed = None
    if see_close:
        try:
            sock.settimeout(2.0)
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
    return Reply(int(lines[0].split()[1]), headers, body[:size], closed)


def _request(address: str, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None, see_close: bool = False) -> Reply:
    head = f"{method} {path} HTTP/1.1\r\nHost: gw\r\n"
    fields = {"Content-Length": str(len(body)), **(headers or {})}
    head += "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    with _connect(address) as sock:
        sock.sendall(head.encode("latin-1") + body)
        return _read_reply(sock, see_close)


def _infer_ok(address: str) -> bool:
    return _request(address, "POST", "/v2/models/identity/infer", IDENTITY).status == 200


# --------------------------------------------------------------------------- binary tensors


@pytest.mark.parametrize(("value", "fragment"), [
    ("9999", "past the end of the request body"),
    ("-5", "invalid Inference-Header-Content-Length"),
    ("abc", "invalid Inference-Header-Content-Length"),
    ("", "invalid Inference-Header-Content-Length"),
    ("1e3", "invalid Inference-Header-Content-Length"),
    ("99999999999999999999999999", "invalid Inference-Header-Content-Length"),
])
def test_bad_inference_header_length_is_400(strict_gateway: GatewayProcess, value: str,
                                            fragment: str) -> None:
    reply = _request(strict_gateway.http, "POST", "/v2/models/identity/infer", IDENTITY,
                     {"Inference-Header-Content-Length": value})
    assert reply.status == 400
    assert fragment in reply.error()


def test_conflicting_inference_header_lengths_are_400(strict_gateway: GatewayProcess) -> None:
    head = ("POST /v2/models/identity/infer HTTP/1.1\r\nHost: gw\r\n"
            f"Content-Length: {len(IDENTITY)}\r\n"
            "Inference-Header-Content-Length: 10\r\nInference-Header-Content-Length: 20\r\n\r\n")
    with _connect(strict_gateway.http) as sock:
        sock.sendall(head.encode() + IDENTITY)
        reply = _read_reply(sock)
    assert reply.status == 400 and "conflicting" in reply.error()


def test_valid_binary_request_still_passes(strict_gateway: GatewayProcess) -> None:
    x = np.arange(8, dtype=np.float32).reshape(1, 8)
    inp = httpclient.InferInput("DATA", [1, 8], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    result = httpclient.InferenceServerClient(strict_gateway.http).infer("identity", [inp])
    assert np.array_equal(result.as_numpy("OUTPUT"), x)


@pytest.mark.parametrize("shape", [
    [1, 100_000_000],  # Triton would allocate and fill 400 MB for this 80-byte request
    [2305843009213693951, 167137],  # Triton would die (found by the schemathesis run)
])
def test_shape_larger_than_the_body_is_400_and_triton_survives(
        strict_gateway: GatewayProcess, triton_pool: list[TritonProcess],
        shape: list[int]) -> None:
    body = json.dumps({"inputs": [{"name": "DATA", "shape": shape, "datatype": "FP32",
                                   "data": [1]}]}).encode()
    reply = _request(strict_gateway.http, "POST", "/v2/models/identity/infer", body)
    assert reply.status == 400 and "declares more elements" in reply.error()
    # the same with the binary extension: the shape is in the JSON part
    head = json.dumps({"inputs": [{"name": "DATA", "shape": shape, "datatype": "FP32",
                                   "parameters": {"binary_data_size": 4}}]}).encode()
    reply = _request(strict_gateway.http, "POST", "/v2/models/identity/infer",
                     head + b"\0\0\x80?", {"Inference-Header-Content-Length": str(len(head))})
    assert reply.status == 400 and "declares more elements" in reply.error()
    for triton in triton_pool:
        assert http_get(f"http://{triton.http}/v2/health/live")[0] == 200
    assert _infer_ok(strict_gateway.http)


# --------------------------------------------------------------------------- sizes


def test_huge_declared_content_length_is_413_before_the_body(
        strict_gateway: GatewayProcess) -> None:
    head = (b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: gw\r\n"
            b"Content-Length: 1000000000000\r\n\r\n")
    with _connect(strict_gateway.http, timeout=5) as sock:
        sock.sendall(head)  # and not one byte of the body
        reply = _read_reply(sock, see_close=True)
    assert reply.status == 413 and "exceeds the limit" in reply.error()
    assert reply.closed  # the unread body is not waited for


def test_chunked_body_over_the_limit_is_413(strict_gateway: GatewayProcess) -> None:
    chunk = b"x" * 1024  # embedder accepts 4096 bytes
    head = (b"POST /v2/models/embedder/infer HTTP/1.1\r\nHost: gw\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    with _connect(strict_gateway.http, timeout=5) as sock:
        sock.sendall(head)
        for _ in range(5):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        # no terminating chunk: the gateway answers as soon as the limit is passed
        reply = _read_reply(sock)
    assert reply.status == 413 and "4096" in reply.error()


# --------------------------------------------------------------------------- model names


def _classifier_count(triton_pool: list[TritonProcess]) -> int:
    total = 0
    for triton in triton_pool:
        status, body = http_get(f"http://{triton.http}/v2/models/classifier/stats")
        assert status == 200
        stats = json.loads(body)["model_stats"][0]["inference_stats"]
        total += int(stats["success"]["count"]) + int(stats["fail"]["count"])
    return total


@pytest.mark.parametrize("path", [
    "/v2/models/../../etc/passwd/infer",
    "/v2/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd/infer",
    "/v2/models/identity%2F..%2Fclassifier/infer",
    "/v2/models/identity/..%2F..%2Fclassifier/infer",
    "/v2/models/identity/versions/1%2F..%2F..%2Fclassifier/infer",
    "/v2/models/%2e%2e/infer",
    "/v2/models/classifier%00/infer",
    "/v2/models/class%00ifier/infer",
    "/v2/models/classifier%20/infer",
    "/v2/models/" + "c" * 60_000 + "/infer",
])
def test_path_tricks_are_4xx_and_never_reach_another_model(
        strict_gateway: GatewayProcess, triton_pool: list[TritonProcess], path: str) -> None:
    body = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32",
                                   "data": [0.0] * 16}]}).encode()
    before = _classifier_count(triton_pool)
    reply = _request(strict_gateway.http, "POST", path, body)
    assert reply.status in (400, 404), reply
    message = reply.error()
    assert len(message) < 1100  # a 60 KB name is not echoed back whole
    assert _classifier_count(triton_pool) == before


def test_url_over_the_parser_limit_is_400_json(strict_gateway: GatewayProcess) -> None:
    reply = _request(strict_gateway.http, "GET", "/v2/models/" + "a" * 70_000 + "/ready",
                     see_close=True)
    assert reply.status == 400 and reply.error() and reply.closed
    assert _infer_ok(strict_gateway.http)


# --------------------------------------------------------------------------- slow clients


def test_body_that_stops_coming_is_408_and_others_are_served(
        strict_gateway: GatewayProcess) -> None:
    head = (b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: gw\r\n"
            b"Content-Length: %d\r\n\r\n" % len(IDENTITY))
    stalled = [_connect(strict_gateway.http) for _ in range(4)]
    try:
        start = time.monotonic()
        for sock in stalled:
            sock.sendall(head + IDENTITY[:10])  # and then nothing
        # meanwhile other connections are served, each well within the stalled deadline
        for _ in range(5):
            t0 = time.monotonic()
            assert _infer_ok(strict_gateway.http)
            assert time.monotonic() - t0 < BODY_TIMEOUT_S / 2
        replies = [_read_reply(sock, see_close=True) for sock in stalled]
        elapsed = time.monotonic() - start
    finally:
        for sock in stalled:
            sock.close()
    for reply in replies:
        assert reply.status == 408 and "did not arrive within 1 s" in reply.error()
        assert reply.closed
    assert BODY_TIMEOUT_S * 0.9 <= elapsed < BODY_TIMEOUT_S + 3


def test_trickled_body_meets_one_deadline_for_the_whole_body(
        strict_gateway: GatewayProcess) -> None:
    head = (b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: gw\r\n"
            b"Content-Length: %d\r\n\r\n" % len(IDENTITY))
    stop = threading.Event()
    with _connect(strict_gateway.http) as sock:
        sock.sendall(head)
        start = time.monotonic()

        def trickle() -> None:  # a byte every 100 ms: each read is quick, the body is not
            for byte in IDENTITY:
                if stop.wait(0.1):
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        try:
            reply = _read_reply(sock)
        finally:
            stop.set()
            sender.join(5)
    assert reply.status == 408
    assert BODY_TIMEOUT_S * 0.9 <= time.monotonic() - start < BODY_TIMEOUT_S + 3


@pytest.mark.parametrize("sent", [b"", b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: g"])
def test_head_that_never_completes_is_408(strict_gateway: GatewayProcess, sent: bytes) -> None:
    with _connect(strict_gateway.http) as sock:
        sock.sendall(sent)
        start = time.monotonic()
        reply = _read_reply(sock, see_close=True)
    assert reply.status == 408 and "request head" in reply.error() and reply.closed
    assert time.monotonic() - start < BODY_TIMEOUT_S + 3
    assert _infer_ok(strict_gateway.http)


# --------------------------------------------------------------------------- methods, bodies


def test_unknown_method_token_is_400_json(strict_gateway: GatewayProcess) -> None:
    reply = _request(strict_gateway.http, "BREW", "/v2/models/identity/infer", see_close=True)
    assert reply.status == 400 and reply.error() and reply.closed
    assert _infer_ok(strict_gateway.http)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_wrong_method_on_infer_is_405(strict_gateway: GatewayProcess, method: str) -> None:
    reply = _request(strict_gateway.http, method, "/v2/models/identity/infer")
    assert reply.status == 405 and reply.headers["allow"] == "POST"
    assert reply.error() == "Method Not Allowed"


@pytest.mark.parametrize(("body", "headers"), [
    (b"", {}),
    (b"{not json", {}),
    (b"[]", {}),
    (b"\xff\xfe\x00garbage", {"Content-Type": "application/octet-stream"}),
    (IDENTITY, {"Content-Type": "text/html"}),
])
def test_bad_bodies_get_tritons_own_answer(strict_gateway: GatewayProcess,
                                           triton_pool: list[TritonProcess], body: bytes,
                                           headers: dict[str, str]) -> None:
    via = _request(strict_gateway.http, "POST", "/v2/models/identity/infer", body, headers)
    direct = _request(triton_pool[0].http, "POST", "/v2/models/identity/infer", body, headers)
    assert via.status == direct.status, (via, direct)
    if via.status != 200:
        assert "error" in json.loads(via.body)


# --------------------------------------------------------------------------- gRPC


def _raw_call(address: str, message: bytes, rpc: str = "ModelInfer") -> tuple[str, str]:
    """``(status code name, details)`` of a unary call whose request is ``message`` as is."""
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)]) as ch:
        call = ch.unary_unary(SERVICE + rpc, request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        try:
            call(message, timeout=10)
        except grpc.RpcError as err:
            return err.code().name, err.details() or ""
    return "OK", ""


def _identity_message() -> bytes:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="DATA", datatype="FP32", shape=[1, 2],
        contents=pb.InferTensorContents(fp32_contents=[1.0, 2.0]))
    return pb.ModelInferRequest(model_name="identity", inputs=[tensor]).SerializeToString()


@pytest.mark.parametrize(("message", "fragment"), [
    (b"\xff\xff\xff\xff", "truncated varint"),
    (b"\x0a\x80", "truncated varint"),
    (b"\x0a\x10iden", "truncated length-delimited field"),
    (b"\x0f", "unsupported wire type"),
    (b"\x00\x01", "field number 0"),
    (b"\x0a\x02\xff\xfe", "not valid UTF-8"),
])
def test_garbage_model_infer_is_invalid_argument(strict_gateway: GatewayProcess,
                                                 message: bytes, fragment: str) -> None:
    for rpc in ("ModelInfer", "ModelMetadata", "ModelReady"):
        code, details = _raw_call(strict_gateway.grpc, message, rpc)
        assert code == "INVALID_ARGUMENT" and fragment in details, (rpc, code, details)
    # a valid model name followed by garbage is caught too, before it is forwarded
    code, details = _raw_call(strict_gateway.grpc, _identity_message() + message)
    assert code == "INVALID_ARGUMENT", (code, details)
    assert _raw_call(strict_gateway.grpc, _identity_message()) == ("OK", "")


@pytest.mark.parametrize("rpc", ["ServerLive", "ServerReady", "ServerMetadata",
                                 "RepositoryIndex"])
def test_garbage_to_rpcs_answered_here_is_invalid_argument(strict_gateway: GatewayProcess,
                                                           rpc: str) -> None:
    code, details = _raw_call(strict_gateway.grpc, b"\xff\xff", rpc)
    assert code == "INVALID_ARGUMENT" and "malformed request message" in details


def test_message_naming_no_model_is_not_found_like_triton(
        strict_gateway: GatewayProcess, triton_pool: list[TritonProcess]) -> None:
    message = pb.ModelInferRequest(id="x").SerializeToString()
    via, direct = (_raw_call(a, message) for a in (strict_gateway.grpc, triton_pool[0].grpc))
    assert via[0] == direct[0] == "NOT_FOUND"
    assert _raw_call(strict_gateway.grpc, b"")[0] == "NOT_FOUND"


@pytest.mark.parametrize("name", ["a" * 10_000, "é" * 100_000])
def test_long_model_name_is_not_found_with_bounded_details(strict_gateway: GatewayProcess,
                                                           name: str) -> None:
    message = pb.ModelInferRequest(model_name=name).SerializeToString()
    code, details = _raw_call(strict_gateway.grpc, message)
    # unbounded, the echoed name overflows the client's 8 KiB metadata limit and the client
    # reports RESOURCE_EXHAUSTED of its own instead of the status the gateway sent
    assert code == "NOT_FOUND" and len(details.encode()) <= 1100


def test_message_over_the_grpc_limit_is_resource_exhausted(
        strict_gateway: GatewayProcess) -> None:
    limit = 64 * 1024 * 1024 + 64 * 1024  # the largest route limit + room for fields
    tensor = b"\0" * (limit + 1024)
    message = pb.ModelInferRequest(model_name="identity",
                                   raw_input_contents=[tensor]).SerializeToString()
    code, _ = _raw_call(strict_gateway.grpc, message)
    assert code == "RESOURCE_EXHAUSTED"
    assert _raw_call(strict_gateway.grpc, _identity_message()) == ("OK", "")
    assert _infer_ok(strict_gateway.http)
