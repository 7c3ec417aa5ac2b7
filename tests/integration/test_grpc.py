"""The unmodified tritonclient (gRPC, sync and aio) against the gateway's gRPC front door.

Unary RPCs are compared with the same call made directly to Triton; streaming goes to a
decoupled model (``streamer``: COUNT -> COUNT responses); failures are real (a Triton worker
killed mid-stream, client deadlines on a slow model). One test puts a recording gRPC server
where Triton would be, because Triton cannot show what metadata and deadline it received.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from servegate.local.launch import TritonProcess, free_port
from servegate.local.models import classify
from tests.conftest import pool_config, start_tritons, stop_all
from tests.harness import GatewayProcess, start_gateway, wait_for

pytestmark = pytest.mark.integration

INFER = "/inference.GRPCInferenceService/ModelInfer"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def stream_pool() -> Iterator[list[TritonProcess]]:
    """Two Triton workers serving ``streamer`` and ``sleeper``; the second one gets killed."""
    procs = start_tritons(2, models=("streamer", "sleeper"))
    yield procs
    stop_all(procs)


@pytest.fixture(scope="module")
def grpc_gateway(triton_pool: list[TritonProcess], stream_pool: list[TritonProcess],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Pool ``cpu`` (the session's two workers) and pool ``stream`` (first stream worker)."""
    config = pool_config(triton_pool)
    stream = pool_config(stream_pool[:1], models=("streamer", "sleeper"))
    config["pools"]["stream"] = stream["pools"]["cpu"]
    config["models"].update({m: {"pool": "stream"} for m in ("streamer", "sleeper")})
    gw = start_gateway(config, tmp_path_factory.mktemp("grpc-gateway"))
    yield gw
    gw.stop()


def _classifier_input(x: np.ndarray, module: Any = grpcclient) -> Any:
    inp = module.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def _count(count: int, delay_ms: int = 0, module: Any = grpcclient) -> list[Any]:
    inputs = [module.InferInput("COUNT", [1], "INT32")]
    inputs[0].set_data_from_numpy(np.array([count], dtype=np.int32))
    if delay_ms:
        inputs.append(module.InferInput("DELAY_MS", [1], "INT32"))
        inputs[1].set_data_from_numpy(np.array([delay_ms], dtype=np.int32))
    return inputs


def _sleep(ms: int, module: Any = grpcclient) -> list[Any]:
    inp = module.InferInput("DELAY_MS", [1, 1], "INT32")
    inp.set_data_from_numpy(np.array([[ms]], dtype=np.int32))
    return [inp]


class Stream:
    """A started tritonclient stream whose callbacks land in a queue."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        self.client = grpcclient.InferenceServerClient(target)
        self.events: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(lambda result, error: self.events.put((result, error)),
                                 **kwargs)

    def take(self, n: int, timeout: float = 20.0) -> list[tuple[Any, Any]]:
        deadline = time.monotonic() + timeout
        return [self.events.get(timeout=max(0.0, deadline - time.monotonic()))
                for _ in range(n)]

    def until_error(self, timeout: float = 20.0) -> tuple[list[Any], Any]:
        """The results received until the first error, and that error."""
        deadline = time.monotonic() + timeout
        results = []
        while True:
            result, error = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            if error is not None:
                return results, error
            results.append(result)

    def close(self) -> None:
        self.client.stop_stream(cancel_requests=True)
        self.client.close()


def _by_id(events: list[tuple[Any, Any]]) -> dict[str, list[int]]:
    """Request id -> the INDEX values its responses carried, in arrival order."""
    out: dict[str, list[int]] = {}
    for result, error in events:
        assert error is None, error
        out.setdefault(result.get_response().id, []).append(int(result.as_numpy("INDEX")[0]))
    return out


# --------------------------------------------------------------------------- unary RPCs


def test_server_rpcs_are_answered_by_the_gateway(grpc_gateway: GatewayProcess) -> None:
    client = grpcclient.InferenceServerClient(grpc_gateway.grpc)
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "servegate" and meta["version"]
    assert "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_infer_same_answer_as_direct(grpc_gateway: GatewayProcess,
                                     triton_pool: list[TritonProcess],
                                     compression: str | None) -> None:
    x = np.random.default_rng(5).random((3, 16), dtype=np.float32)
    outputs = [grpcclient.InferRequestedOutput("PROBS"), grpcclient.InferRequestedOutput("LABEL")]
    results = [
        grpcclient.InferenceServerClient(target).infer(
            "classifier", [_classifier_input(x)], outputs=outputs, request_id="req-9",
            compression_algorithm=compression)
        for target in (grpc_gateway.grpc, triton_pool[0].grpc)
    ]
    via, direct = (r.get_response(as_json=True) for r in results)
    assert via == direct
    assert via["id"] == "req-9" and via["model_name"] == "classifier"
    np.testing.assert_allclose(results[0].as_numpy("PROBS"), classify(x, 1), rtol=1e-5)


def test_model_rpcs_same_as_direct(grpc_gateway: GatewayProcess,
                                   triton_pool: list[TritonProcess]) -> None:
    via = grpcclient.InferenceServerClient(grpc_gateway.grpc)
    direct = grpcclient.InferenceServerClient(triton_pool[0].grpc)
    assert via.is_model_ready("classifier") and via.is_model_ready("classifier", "1")
    for model, version in (("classifier", "7"), ("nope", "")):
        assert via.is_model_ready(model, version) is direct.is_model_ready(model, version) is False
    for model, version in (("classifier", ""), ("classifier", "1"), ("embedder", "")):
        assert (via.get_model_metadata(model, version, as_json=True)
                == direct.get_model_metadata(model, version, as_json=True))
    via_cfg = via.get_model_config("embedder", as_json=True)["config"]
    direct_cfg = direct.get_model_config("embedder", as_json=True)["config"]
    via_cfg.pop("parameters"), direct_cfg.pop("parameters")  # per-server workspace path
    assert via_cfg == direct_cfg and via_cfg["name"] == "embedder"


def test_statistics_are_summed_over_the_pool(grpc_gateway: GatewayProcess,
                                             triton_pool: list[TritonProcess]) -> None:
    client = grpcclient.InferenceServerClient(grpc_gateway.grpc)
    for _ in range(10):
        client.infer("identity", [_identity_input(4)])

    def count(target: str) -> int:
        stats = grpcclient.InferenceServerClient(target).get_inference_statistics(
            "identity", as_json=True)
        return int(stats["model_stats"][0]["inference_count"])

    assert count(grpc_gateway.grpc) == sum(count(t.grpc) for t in triton_pool) >= 10
    names = {s["name"] for s in client.get_inference_statistics(as_json=True)["model_stats"]}
    assert names >= {"classifier", "embedder", "identity", "streamer", "sleeper"}


def _identity_input(n: int) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("DATA", [1, n], "FP32")
    inp.set_data_from_numpy(np.arange(n, dtype=np.float32)[None, :])
    return inp


def test_repository_index_from_routing_table(grpc_gateway: GatewayProcess) -> None:
    index = grpcclient.InferenceServerClient(grpc_gateway.grpc).get_model_repository_index(
        as_json=True)
    assert {m["name"]: m["state"] for m in index["models"]} == {
        "classifier": "READY", "embedder": "READY", "identity": "READY", "sleeper": "READY",
        "streamer": "READY"}


async def test_aio_client(grpc_gateway: GatewayProcess) -> None:
    client = aiogrpcclient.InferenceServerClient(grpc_gateway.grpc)
    try:
        assert await client.is_server_live() and await client.is_server_ready()
        assert await client.is_model_ready("classifier")
        meta = await client.get_model_metadata("classifier", as_json=True)
        assert meta["inputs"][0]["name"] == "INPUT"
        xs = [np.full((1, 16), i / 10, dtype=np.float32) for i in range(40)]
        results = await asyncio.gather(*(
            client.infer("classifier", [_classifier_input(x, aiogrpcclient)],
                         request_id=str(i), compression_algorithm="gzip")
            for i, x in enumerate(xs)))
        for i, (x, result) in enumerate(zip(xs, results, strict=True)):
            assert result.get_response().id == str(i)
            np.testing.assert_allclose(result.as_numpy("PROBS"), classify(x, 1), rtol=1e-5)
        stats = await client.get_inference_statistics("classifier", as_json=True)
        assert int(stats["model_stats"][0]["inference_count"]) >= 40
    finally:
        await client.close()


# --------------------------------------------------------------------------- errors


def _rpc_error(call: Any, *args: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as err:
        call(*args)
    return err.value


def test_unknown_model_is_not_found(grpc_gateway: GatewayProcess) -> None:
    client = grpcclient.InferenceServerClient(grpc_gateway.grpc)
    for call in (lambda: client.infer("nope", [_identity_input(4)]),
                 lambda: client.get_model_metadata("nope"),
                 lambda: client.get_model_config("nope")):
        err = _rpc_error(call)
        assert err.status() == "StatusCode.NOT_FOUND" and "unknown model" in err.message()


def test_backend_errors_pass_through(grpc_gateway: GatewayProcess,
                                     triton_pool: list[TritonProcess]) -> None:
    wrong = grpcclient.InferInput("WRONG", [1, 16], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 16), np.float32))
    errors = [_rpc_error(grpcclient.InferenceServerClient(target).infer, "classifier", [wrong])
              for target in (grpc_gateway.grpc, triton_pool[0].grpc)]
    assert errors[0].status() == errors[1].status() == "StatusCode.INVALID_ARGUMENT"
    assert errors[0].message() == errors[1].message()
    # a decoupled model refuses ModelInfer; Triton's UNIMPLEMENTED comes through as it was
    err = _rpc_error(lambda: grpcclient.InferenceServerClient(grpc_gateway.grpc).infer(
        "streamer", _count(1)))
    assert err.status() == "StatusCode.UNIMPLEMENTED" and "decoupled" in err.message()


def test_oversize_request_is_resource_exhausted(grpc_gateway: GatewayProcess) -> None:
    text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"x" * 5000]], dtype=object))  # embedder: 4096 bytes
    err = _rpc_error(lambda: grpcclient.InferenceServerClient(grpc_gateway.grpc).infer(
        "embedder", [text]))
    assert err.status() == "StatusCode.RESOURCE_EXHAUSTED" and "4096" in err.message()


def test_unimplemented_rpcs_explain_why(grpc_gateway: GatewayProcess) -> None:
    client = grpcclient.InferenceServerClient(grpc_gateway.grpc)
    calls = {
        "shared memory cannot cross a gateway": (
            client.get_system_shared_memory_status,
            lambda: client.register_system_shared_memory("r", "/shm", 64),
            lambda: client.unregister_cuda_shared_memory("r"),
        ),
        "per Triton server": (client.get_trace_settings, client.get_log_settings),
        "load/unload is not available": (lambda: client.load_model("classifier"),
                                         lambda: client.unload_model("classifier")),
    }
    for fragment, group in calls.items():
        for call in group:
            err = _rpc_error(call)
            assert err.status() == "StatusCode.UNIMPLEMENTED", err
            assert fragment in err.message()


def test_grpc_requests_are_in_metrics(grpc_gateway: GatewayProcess) -> None:
    grpcclient.InferenceServerClient(grpc_gateway.grpc).infer("identity", [_identity_input(2)])
    assert grpc_gateway.metric("servegate_requests_total", model="identity", protocol="grpc",
                               code_class="2xx") >= 1
    _rpc_error(lambda: grpcclient.InferenceServerClient(grpc_gateway.grpc).infer(
        "nope", [_identity_input(2)]))
    assert grpc_gateway.metric("servegate_requests_total", model="<unknown>", protocol="grpc",
                               code_class="4xx") >= 1


# --------------------------------------------------------------------------- streaming


def test_stream_delivers_every_decoupled_response_in_order(
        grpc_gateway: GatewayProcess, stream_pool: list[TritonProcess]) -> None:
    seen = []
    for target in (grpc_gateway.grpc, stream_pool[0].grpc):
        stream = Stream(target)
        try:
            for rid, count in (("a", 5), ("b", 3), ("c", 1)):
                stream.client.async_stream_infer("streamer", _count(count), request_id=rid)
            seen.append(_by_id(stream.take(9)))
        finally:
            stream.close()
    assert seen[0] == seen[1] == {"a": [0, 1, 2, 3, 4], "b": [0, 1, 2], "c": [0]}


def test_stream_errors_leave_the_stream_open(grpc_gateway: GatewayProcess) -> None:
    stream = Stream(grpc_gateway.grpc)
    try:
        stream.client.async_stream_infer("nope", _count(1), request_id="unknown")
        stream.client.async_stream_infer("streamer", _count(-1), request_id="invalid")
        stream.client.async_stream_infer("streamer", [], request_id="no-inputs")
        events = stream.take(3)
        assert all(result is None for result, _ in events)
        errors = [error.message() for _, error in events]
        assert any("unknown model" in e for e in errors)
        assert any("COUNT must be >= 0" in e for e in errors)
        assert any("missing required input" in e for e in errors)
        stream.client.async_stream_infer("streamer", _count(2), request_id="ok")
        assert _by_id(stream.take(2)) == {"ok": [0, 1]}
    finally:
        stream.close()
    assert grpc_gateway.metric("servegate_rejected_requests_total", protocol="grpc") >= 1


def test_one_stream_may_use_models_of_several_pools(grpc_gateway: GatewayProcess) -> None:
    stream = Stream(grpc_gateway.grpc)
    try:
        x = np.full((1, 16), 0.5, dtype=np.float32)
        stream.client.async_stream_infer("streamer", _count(3), request_id="s")
        stream.client.async_stream_infer("classifier", [_classifier_input(x)], request_id="c")
        events = stream.take(4)
    finally:
        stream.close()
    by_model: dict[str, list[Any]] = {}
    for result, error in events:
        assert error is None, error
        by_model.setdefault(result.get_response().model_name, []).append(result)
    assert [int(r.as_numpy("INDEX")[0]) for r in by_model["streamer"]] == [0, 1, 2]
    np.testing.assert_allclose(by_model["classifier"][0].as_numpy("PROBS"), classify(x, 1),
                               rtol=1e-5)


async def test_aio_stream_infer(grpc_gateway: GatewayProcess) -> None:
    client = aiogrpcclient.InferenceServerClient(grpc_gateway.grpc)

    async def requests() -> AsyncIterator[dict[str, Any]]:
        for rid, count in (("x", 4), ("y", 2)):
            yield {"model_name": "streamer", "inputs": _count(count, module=aiogrpcclient),
                   "request_id": rid}
        yield {"model_name": "nope", "inputs": _count(1, module=aiogrpcclient)}

    got: dict[str, list[int]] = {}
    errors = []
    try:
        async for result, error in client.stream_infer(requests()):
            if error is not None:
                errors.append(error.message())
            else:
                got.setdefault(result.get_response().id, []).append(
                    int(result.as_numpy("INDEX")[0]))
    finally:
        await client.close()
    assert got == {"x": [0, 1, 2, 3], "y": [0, 1]}
    assert len(errors) == 1 and "unknown model" in errors[0]


# --------------------------------------------------------------------------- deadlines


def _in_flight(gw: GatewayProcess, model: str) -> float:
    return gw.metric("servegate_in_flight_requests", model=model)


def test_short_deadline_is_deadline_exceeded(grpc_gateway: GatewayProcess,
                                             stream_pool: list[TritonProcess]) -> None:
    client = grpcclient.InferenceServerClient(grpc_gateway.grpc)
    started = time.monotonic()
    err = _rpc_error(lambda: client.infer("sleeper", _sleep(3000), client_timeout=0.2))
    assert err.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 2.5  # well before the backend answers
    wait_for(lambda: _in_flight(grpc_gateway, "sleeper") == 0, 2, "in-flight back to 0")
    endpoint = stream_pool[0].http
    assert grpc_gateway.metric("servegate_endpoint_outstanding_requests", endpoint=endpoint) == 0
    # the client's own deadline says nothing about the endpoint: no upstream error recorded
    assert grpc_gateway.metric("servegate_upstream_errors_total", endpoint=endpoint) == 0


async def test_client_cancellation_reaches_the_gateway(grpc_gateway: GatewayProcess) -> None:
    client = aiogrpcclient.InferenceServerClient(grpc_gateway.grpc)
    try:
        task = asyncio.create_task(client.infer("sleeper", _sleep(3000, aiogrpcclient)))
        await asyncio.to_thread(wait_for, lambda: _in_flight(grpc_gateway, "sleeper") == 1, 5,
                                "the request in flight")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(wait_for, lambda: _in_flight(grpc_gateway, "sleeper") == 0, 2.5,
                                "in-flight back to 0 before the backend answers")
    finally:
        await client.close()


def test_stream_deadline_ends_the_stream(grpc_gateway: GatewayProcess) -> None:
    stream = Stream(grpc_gateway.grpc, stream_timeout=0.5)
    try:
        stream.client.async_stream_infer("streamer", _count(25, delay_ms=40), request_id="slow")
        results, error = stream.until_error()
    finally:
        stream.close()
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert 0 < len(results) < 25
    wait_for(lambda: _in_flight(grpc_gateway, "streamer") == 0, 5, "in-flight back to 0")


def test_client_cancelling_a_stream_releases_it(grpc_gateway: GatewayProcess,
                                                stream_pool: list[TritonProcess]) -> None:
    stream = Stream(grpc_gateway.grpc)
    try:
        stream.client.async_stream_infer("streamer", _count(20, delay_ms=30), request_id="c")
        stream.take(2)
        assert _in_flight(grpc_gateway, "streamer") == 1
    finally:
        stream.close()  # cancels the call
    wait_for(lambda: _in_flight(grpc_gateway, "streamer") == 0, 5, "in-flight back to 0")
    assert grpc_gateway.metric("servegate_endpoint_outstanding_requests",
                               endpoint=stream_pool[0].http) == 0
    # one sample per backend stream; a cancelled one counts as 499
    assert grpc_gateway.metric("servegate_requests_total", model="streamer",
                               protocol="grpc_stream", code_class="4xx") >= 1


# --------------------------------------------------------------------------- failures


def test_backend_killed_mid_stream(stream_pool: list[TritonProcess], tmp_path: Path) -> None:
    survivor, victim = stream_pool
    gw = start_gateway(pool_config([survivor, victim], models=("streamer", "sleeper")),
                       tmp_path / "gw")
    streams: list[Stream] = []

    def outstanding(t: TritonProcess) -> float:
        return gw.metric("servegate_endpoint_outstanding_requests", endpoint=t.http)

    try:
        # A stream holds its endpoint; with one stream open on the survivor, the power of two
        # choices sends the next one to the idle victim.
        for _ in range(2):
            streams.append(Stream(gw.grpc))
            streams[-1].client.async_stream_infer("streamer", _count(1), request_id="warm")
            assert _by_id(streams[-1].take(1)) == {"warm": [0]}
            if outstanding(victim) == 1:
                break
        assert outstanding(victim) == 1
        on_victim = streams[-1]
        on_victim.client.async_stream_infer("streamer", _count(10_000, delay_ms=10),
                                            request_id="long")
        on_victim.take(3)
        victim.kill()
        _, error = on_victim.until_error()
        assert error.status() == "StatusCode.UNAVAILABLE"
        wait_for(lambda: gw.metric("servegate_endpoint_healthy", endpoint=victim.http) == 0,
                 10, "the killed endpoint ejected")
        assert gw.proc.poll() is None
        streams.append(Stream(gw.grpc))
        streams[-1].client.async_stream_infer("streamer", _count(3), request_id="after")
        assert _by_id(streams[-1].take(3)) == {"after": [0, 1, 2]}
        slept = grpcclient.InferenceServerClient(gw.grpc).infer("sleeper", _sleep(0))
        assert slept.as_numpy("SLEPT_MS")[0, 0] == 0
    finally:
        for stream in streams:
            stream.close()
        gw.stop()


class Recorder:
    """A gRPC server standing in for Triton: records each ModelInfer's bytes, metadata and
    deadline, holds it for ``x-hold-s`` seconds unless cancelled, answers canned bytes."""

    RESPONSE = pb.ModelInferResponse(model_name="fake", id="from-fake").SerializeToString()

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, dict[str, Any], float | None]] = []
        self.cancelled = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService",
            {"ModelInfer": grpc.unary_unary_rpc_method_handler(self._infer)}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _infer(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata())
        self.calls.append((request, metadata, context.time_remaining()))
        until = time.monotonic() + float(metadata.get("x-hold-s", 0))
        while time.monotonic() < until:
            if not context.is_active():
                self.cancelled.set()
                break
            time.sleep(0.01)
        return self.RESPONSE


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.server.stop(0)


def test_bytes_metadata_deadline_and_cancellation_reach_the_backend(
        recorder: Recorder, tmp_path: Path) -> None:
    dead = {"http": f"127.0.0.1:{free_port()}", "grpc": f"127.0.0.1:{free_port()}"}
    fake = {"http": f"127.0.0.1:{free_port()}", "grpc": f"127.0.0.1:{recorder.port}"}
    gw = start_gateway({
        "pools": {"fake": {
            "endpoints": [dead, fake],
            # nothing answers HTTP probes here; keep the dead endpoint in the rotation
            "health": {"active_probes": False, "eject_after_failures": 10**6},
        }},
        "models": {"fake": {"pool": "fake"}},
    }, tmp_path / "gw")
    request = pb.ModelInferRequest(model_name="fake", id="r-1")
    request.raw_input_contents.append(bytes(range(256)) * 64)
    raw = request.SerializeToString()
    try:
        with grpc.insecure_channel(gw.grpc) as channel:
            infer = channel.unary_unary(INFER)
            for _ in range(12):  # the dead endpoint refuses: retried on the other one
                answer = infer(raw, timeout=10, metadata=(
                    ("x-tenant", "acme"), ("x-trace-bin", b"\x00\x01")))
                assert answer == Recorder.RESPONSE
            assert gw.metric("servegate_upstream_errors_total", endpoint=dead["http"],
                             kind="connect") >= 1
            forwarded, metadata, remaining = recorder.calls[-1]
            assert forwarded == raw
            assert metadata["x-tenant"] == "acme" and metadata["x-trace-bin"] == b"\x00\x01"
            # the client's deadline, not the route's 60 s (grpc-timeout rounds up a little)
            assert remaining is not None and 0 < remaining <= 10.5

            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                infer(raw, timeout=0.3, metadata=(("x-hold-s", "30"),))
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # without propagation the backend would hold the call for 30 s
            wait_for(recorder.cancelled.is_set, 10, "the backend call cancelled")
            assert time.monotonic() - started < 10
            wait_for(lambda: gw.metric("servegate_in_flight_requests", model="fake") == 0, 5,
                     "in-flight back to 0")
    finally:
        gw.stop()


def test_a_pool_without_grpc_addresses_is_unavailable_and_says_why(
        triton_pool: list[TritonProcess], tmp_path: Path) -> None:
    """The config warns at load; a gRPC call then gets UNAVAILABLE naming the missing address
    (a REST call to the same model is served)."""
    config = {"pools": {"rest-only": {"endpoints": [t.http for t in triton_pool]}},
              "models": {"identity": {"pool": "rest-only"}}}
    gw = start_gateway(config, tmp_path)
    try:
        assert "lists no gRPC address" in gw.log()
        err = _rpc_error(grpcclient.InferenceServerClient(gw.grpc).infer, "identity",
                         [_identity_input(4)])
        assert err.status() == "StatusCode.UNAVAILABLE", err
        assert "gRPC address" in err.message()
    finally:
        gw.stop()
