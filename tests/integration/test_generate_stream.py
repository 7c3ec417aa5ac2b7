"""``POST /v2/models/{m}/generate_stream`` through the gateway against a real Triton (a decoupled
PyTriton model): Server-Sent Events pass through as Triton emits them, never buffered; the
first event reaches the client before the last one exists; a client that goes away cancels the
call upstream; time to first byte is a metric."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator

import pytest

from servegate.local.launch import TritonProcess
from tests.conftest import start_tritons, stop_all
from tests.harness import GatewayProcess, start_gateway, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def streamer() -> Iterator[list[TritonProcess]]:
    procs = start_tritons(1, models=("streamer",))
    yield procs
    stop_all(procs)


@pytest.fixture(scope="module")
def gateway(streamer: list[TritonProcess],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {"pools": {"llm": {"endpoints": [t.http for t in streamer]}},
              "models": {"streamer": {"pool": "llm"}}}
    gw = start_gateway(config, tmp_path_factory.mktemp("gw-stream"))
    yield gw
    gw.stop()


def open_stream(address: str, count: int, delay_ms: int) -> http.client.HTTPResponse:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/v2/models/streamer/generate_stream",
                 body=json.dumps({"COUNT": count, "DELAY_MS": delay_ms}),
                 headers={"content-type": "application/json"})
    return conn.getresponse()


def events(response: http.client.HTTPResponse) -> Iterator[tuple[float, dict[str, object]]]:
    """(seconds since the response head, parsed event) for each ``data:`` line."""
    start = time.monotonic()
    while True:
        line = response.readline()
        if not line:
            return
        if line.startswith(b"data:"):
            yield time.monotonic() - start, json.loads(line[5:])


def test_events_pass_through_as_triton_emits_them(gateway: GatewayProcess,
                                                  streamer: list[TritonProcess]) -> None:
    direct = [e for _, e in events(open_stream(streamer[0].http, 3, 0))]
    response = open_stream(gateway.http, 4, 400)
    assert response.status == 200
    assert response.getheader("content-type", "").startswith("text/event-stream")
    got = list(events(response))
    assert [e["INDEX"] for _, e in got] == [0, 1, 2, 3]
    assert [e for _, e in got][:3] == direct  # byte for byte what Triton sends
    # not buffered: the first event came about 1.2 s before the last one was even produced
    assert got[-1][0] - got[0][0] >= 0.9, got
    assert gateway.metric("servegate_time_to_first_byte_seconds_count",
                          model="streamer", protocol="http") >= 1


def test_a_client_that_goes_away_cancels_the_stream(gateway: GatewayProcess) -> None:
    response = open_stream(gateway.http, 100, 100)  # ten seconds of events
    stream = events(response)
    next(stream)
    next(stream)
    assert gateway.metric("servegate_in_flight_requests", model="streamer") == 1
    response.close()
    # the call ends upstream long before its ten seconds
    wait_for(lambda: gateway.metric("servegate_in_flight_requests", model="streamer") == 0,
             5, "the stream's call to end after the client left")


def test_unknown_model_and_wrong_method_are_v2_errors(gateway: GatewayProcess) -> None:
    host, port = gateway.http.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/v2/models/nope/generate_stream", body=b"{}")
    r = conn.getresponse()
    assert r.status == 404 and "error" in json.loads(r.read())
    conn.request("GET", "/v2/models/streamer/generate_stream")
    r = conn.getresponse()
    assert r.status == 405 and "error" in json.loads(r.read())
