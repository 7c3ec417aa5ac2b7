"""KEDA's side of the external scaler, played by a gRPC client built from KEDA's
``externalscaler.proto`` alone (compiled here into its own descriptor pool, called by method
path), against the autoscaler running with ``--actuator keda``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from autoscaler.main import Autoscaler, AutoscalerSettings
from contracts import parse_config

PROTO = Path(__file__).with_name("externalscaler.proto")
SERVICE = "/externalscaler.ExternalScaler/"


def compile_proto(tmp: Path, proto: Path) -> descriptor_pb2.FileDescriptorSet:
    from grpc_tools import protoc

    out = tmp / "set.pb"
    rc = protoc.main(["protoc", f"-I{proto.parent}", f"--descriptor_set_out={out}",
                      proto.name])
    assert rc == 0, f"protoc failed on {proto}"
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


class Keda:
    """The calls KEDA's external scaler client makes, by method path."""

    def __init__(self, channel: grpc.aio.Channel, tmp: Path) -> None:
        pool = descriptor_pool.DescriptorPool()
        for f in compile_proto(tmp, PROTO).file:
            pool.Add(f)
        msg = {name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"externalscaler.{name}"))
            for name in ("ScaledObjectRef", "IsActiveResponse", "GetMetricSpecResponse",
                         "GetMetricsRequest", "GetMetricsResponse")}
        self.msg = msg

        def unary(method: str, request: str, response: str) -> Any:
            return channel.unary_unary(SERVICE + method,
                                       request_serializer=msg[request].SerializeToString,
                                       response_deserializer=msg[response].FromString)

        self.is_active = unary("IsActive", "ScaledObjectRef", "IsActiveResponse")
        self.get_metric_spec = unary("GetMetricSpec", "ScaledObjectRef", "GetMetricSpecResponse")
        self.get_metrics = unary("GetMetrics", "GetMetricsRequest", "GetMetricsResponse")
        self.stream_is_active = channel.unary_stream(
            SERVICE + "StreamIsActive", request_serializer=msg["ScaledObjectRef"].SerializeToString,
            response_deserializer=msg["IsActiveResponse"].FromString)
        self.stream_metric_spec = channel.unary_stream(
            SERVICE + "StreamMetricSpec",
            request_serializer=msg["ScaledObjectRef"].SerializeToString,
            response_deserializer=msg["GetMetricSpecResponse"].FromString)

    def ref(self, pool: str | None, name: str = "triton-cpu") -> Any:
        meta = {"scalerAddress": "servegate-autoscaler:9095"}
        if pool is not None:
            meta["pool"] = pool
        return self.msg["ScaledObjectRef"](name=name, namespace="serving", scalerMetadata=meta)

    def metrics_request(self, pool: str, metric: str) -> Any:
        return self.msg["GetMetricsRequest"](scaledObjectRef=self.ref(pool), metricName=metric)


CONFIG = {
    "pools": {"cpu": {"endpoints": []}, "gpu": {"endpoints": []}},
    "models": {"classifier": {"pool": "cpu"}, "big": {"pool": "gpu"}},
    "autoscaling": {"controller": {"tick_s": 30}, "pools": {
        "cpu": {"targets": {"concurrency_per_replica": 4}},
        "gpu": {"min_replicas": 2, "targets": {"queue_per_replica": 10},
                "keda": {"metric_target": 50}}}},
}


@pytest.fixture()
async def keda(tmp_path: Path) -> AsyncIterator[tuple[Keda, Autoscaler]]:
    settings = AutoscalerSettings(tmp_path / "sg.yaml", actuator="keda", host="127.0.0.1",
                                  status_port=0, keda_port=0)
    stop = asyncio.Event()
    async with Autoscaler(settings, config=parse_config(CONFIG)) as a:
        run = asyncio.create_task(a.run(stop))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{a.keda_port}") as channel:
            yield Keda(channel, tmp_path), a
        stop.set()
        await asyncio.wait_for(run, 5)


async def test_metric_spec_and_values_reproduce_the_decision(
        keda: tuple[Keda, Autoscaler]) -> None:
    k, a = keda
    spec = (await k.get_metric_spec(k.ref("cpu"))).metricSpecs
    assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in spec] == [
        ("servegate-cpu", 100, 100.0)]
    idle = (await k.get_metrics(k.metrics_request("cpu", "servegate-cpu"))).metricValues
    assert [(v.metricName, v.metricValue, v.metricValueFloat) for v in idle] == [
        ("servegate-cpu", 0, 0.0)]
    assert a.controller is not None
    await a.controller.step("gpu")  # min 2: desired 2
    gpu = (await k.get_metrics(k.metrics_request("gpu", "servegate-gpu"))).metricValues[0]
    assert (gpu.metricValue, gpu.metricValueFloat) == (100, 100.0)  # 2 x target 50
    gpu_spec = (await k.get_metric_spec(k.ref("gpu"))).metricSpecs[0]
    # KEDA's HPA (AverageValue): ceil(total / target) replicas
    assert -(-gpu.metricValueFloat // gpu_spec.targetSizeFloat) == 2


async def test_idle_pool_is_inactive_and_a_pool_with_a_minimum_is_active(
        keda: tuple[Keda, Autoscaler]) -> None:
    k, a = keda
    assert (await k.is_active(k.ref("cpu"))).result is False
    assert a.controller is not None
    await a.controller.step("gpu")
    assert (await k.is_active(k.ref("gpu"))).result is True


async def test_stream_pushes_true_when_a_zero_pool_is_activated(
        keda: tuple[Keda, Autoscaler]) -> None:
    k, a = keda
    stream = k.stream_is_active(k.ref("cpu"))
    first = await asyncio.wait_for(stream.read(), 2)
    assert first.result is False
    assert a.controller is not None
    started = time.monotonic()
    assert a.controller.activate("cpu")
    pushed = await asyncio.wait_for(stream.read(), 2)
    assert pushed.result is True
    assert time.monotonic() - started < 0.5
    assert (await k.is_active(k.ref("cpu"))).result is True
    metrics = (await k.get_metrics(k.metrics_request("cpu", "servegate-cpu"))).metricValues[0]
    assert metrics.metricValueFloat == 100.0
    stream.cancel()


async def test_unknown_or_missing_pool_and_unimplemented_stream_spec(
        keda: tuple[Keda, Autoscaler]) -> None:
    k, _ = keda
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await k.is_active(k.ref("nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await k.get_metric_spec(k.ref(None))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await k.stream_metric_spec(k.ref("cpu")).read()
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def strip_json_names(messages: Any) -> None:
    for message in messages:
        for f in message.field:
            f.ClearField("json_name")
        strip_json_names(message.nested_type)


def test_the_products_proto_is_kedas(tmp_path: Path) -> None:
    """The committed proto and stubs describe exactly KEDA's service and messages."""
    from autoscaler.keda import externalscaler_pb2

    product = Path(externalscaler_pb2.__file__).with_name("externalscaler.proto")
    ours = compile_proto(tmp_path, product).file[0]
    kedas = compile_proto(tmp_path, PROTO).file[0]
    ours.name = kedas.name = "externalscaler.proto"
    assert ours == kedas
    committed = descriptor_pb2.FileDescriptorProto.FromString(
        externalscaler_pb2.DESCRIPTOR.serialized_pb)
    strip_json_names(kedas.message_type)  # the embedded descriptor leaves them out
    assert committed.service == kedas.service and committed.message_type == kedas.message_type
