"""gateway.grpc.wire.request_head: model name, version and id read from raw request bytes,
checked against the protobuf library's own parser."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from gateway.errors import BadRequest
from gateway.grpc.wire import MalformedMessage, request_head


def infer_request(**fields: object) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(**fields)  # type: ignore[arg-type]
    tensor = request.inputs.add(name="INPUT", datatype="FP32", shape=[1, 4])
    tensor.parameters["binary_data_size"].int64_param = 16
    request.outputs.add(name="PROBS")
    request.parameters["priority"].uint64_param = 2**40
    request.parameters["timeout"].int64_param = -1
    request.parameters["flag"].bool_param = True
    request.parameters["ratio"].double_param = 0.5
    request.raw_input_contents.append(b"\x00\x01\x02\x03" * 4)
    return request


REQUESTS = [
    pb.ModelInferRequest(),
    pb.ModelInferRequest(model_name="classifier"),
    pb.ModelInferRequest(model_name="classifier", model_version="2", id="req-7"),
    pb.ModelInferRequest(model_version="12", id="only-id"),
    infer_request(model_name="my_model-v1.onnx", model_version="3", id="x" * 300),
    infer_request(model_name="é模型", id="ünïcode"),
    infer_request(model_name="m" * 200),  # a two-byte length
]


@pytest.mark.parametrize("request_", REQUESTS)
def test_matches_protobuf(request_: pb.ModelInferRequest) -> None:
    raw = request_.SerializeToString()
    assert request_head(raw) == (request_.model_name, request_.model_version, request_.id)


def test_large_tensor_is_skipped_not_read() -> None:
    request = infer_request(model_name="identity", id="big")
    request.raw_input_contents.append(b"\xff" * (8 << 20))
    assert request_head(request.SerializeToString()) == ("identity", "", "big")


@pytest.mark.parametrize(("message", "expected"), [
    (pb.ModelReadyRequest(name="m", version="4"), ("m", "4", "")),
    (pb.ModelMetadataRequest(name="m"), ("m", "", "")),
    (pb.ModelConfigRequest(name="m", version="1"), ("m", "1", "")),
    (pb.ModelStatisticsRequest(), ("", "", "")),
    (pb.ModelStatisticsRequest(name="m", version="2"), ("m", "2", "")),
])
def test_other_model_scoped_requests(message: object, expected: tuple[str, str, str]) -> None:
    assert request_head(message.SerializeToString()) == expected  # type: ignore[attr-defined]


def test_fields_in_any_order_and_the_last_occurrence_wins() -> None:
    # Concatenated messages merge: scalar fields repeated on the wire take the last value.
    raw = (infer_request(id="first").SerializeToString()
           + pb.ModelInferRequest(model_name="b", model_version="2").SerializeToString()
           + pb.ModelInferRequest(model_name="c").SerializeToString())
    parsed = pb.ModelInferRequest.FromString(raw)
    assert request_head(raw) == (parsed.model_name, parsed.model_version, parsed.id)
    assert request_head(raw) == ("c", "2", "first")


def test_every_prefix_agrees_with_protobuf() -> None:
    raw = infer_request(model_name="classifier", model_version="1", id="r").SerializeToString()
    for cut in range(len(raw) + 1):
        prefix = raw[:cut]
        try:
            parsed = pb.ModelInferRequest.FromString(prefix)
        except DecodeError:
            with pytest.raises(MalformedMessage):
                request_head(prefix)
        else:
            assert request_head(prefix) == (parsed.model_name, parsed.model_version, parsed.id)


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"\x0a\x05abc", "truncated length-delimited"),
    (b"\x0a", "truncated varint"),
    (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "varint longer"),
    (b"\x0b\x0c", "wire type 3"),  # a group
    (b"\x0c", "wire type 4"),
    (b"\x0e", "wire type 6"),
    (b"\x02\x00", "field number 0"),
    (b"\x49\x00\x00", "truncated fixed-size"),  # field 9, 64-bit, 2 of 8 bytes
    (b"\x0a\x02\xc3\x28", "not valid UTF-8"),
])
def test_malformed(raw: bytes, fragment: str) -> None:
    with pytest.raises(MalformedMessage) as err:
        request_head(raw)
    assert fragment in str(err.value)
    assert isinstance(err.value, BadRequest)  # answered as INVALID_ARGUMENT


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    raw = (b"\x98\x06\x96\x01"          # field 99, varint 150
           + b"\x09" + b"\x00" * 8      # field 1, fixed64 (not a string: ignored)
           + b"\x15" + b"\x00" * 4      # field 2, fixed32
           + b"\x0a\x01m"               # field 1 = "m"
           + b"\xa2\x06\x03abc")        # field 100, length-delimited
    assert request_head(raw) == ("m", "", "")
