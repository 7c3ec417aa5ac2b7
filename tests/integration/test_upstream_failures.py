"""Upstream failures the client sees through the real gateway: a backend that never answers
(504), one that drops the connection mid-response (502), one that refuses (503)."""

from __future__ import annotations

import json
import socket
import struct
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from servegate.local.launch import free_port
from tests.harness import GatewayProcess, start_gateway

pytestmark = pytest.mark.integration


class MisbehavingBackend:
    """A TCP server that reads a request and then stalls or resets, per ``mode``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            conn.recv(65536)
            if self.mode == "reset":
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
                linger_zero = struct.pack("ii", 1, 0)  # close() sends RST
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[MisbehavingBackend]:
    b = MisbehavingBackend(request.param)
    yield b
    b.close()


def _gateway(tmp_path: Path, endpoint: str) -> GatewayProcess:
    return start_gateway({
        "pools": {"p": {"endpoints": [endpoint],
                        "timeouts": {"connect_s": 0.5, "read_s": 0.5},
                        "health": {"active_probes": False, "eject_after_failures": 1000}}},
        "models": {"m": {"pool": "p"}},
    }, tmp_path / "gw")


def _post(gw: GatewayProcess) -> tuple[int, dict[str, str], dict[str, object]]:
    req = urllib.request.Request(gw.url + "/v2/models/m/infer", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


@pytest.mark.parametrize(("backend", "status", "kind"), [
    ("stall", 504, "timeout"), ("reset", 502, "broken"),
], indirect=["backend"])
def test_backend_failure_maps_to_status(backend: MisbehavingBackend, status: int, kind: str,
                                        tmp_path: Path) -> None:
    gw = _gateway(tmp_path, f"127.0.0.1:{backend.port}")
    try:
        got, _, doc = _post(gw)
        assert got == status
        assert isinstance(doc["error"], str) and f"127.0.0.1:{backend.port}" in doc["error"]
        assert gw.metric("servegate_upstream_errors_total", kind=kind) == 1
        # The gateway itself is fine and answers the next request the same way.
        assert _post(gw)[0] == status
    finally:
        gw.stop()


def test_every_endpoint_refusing_is_503_with_retry_after(tmp_path: Path) -> None:
    gw = _gateway(tmp_path, f"127.0.0.1:{free_port()}")
    try:
        got, headers, doc = _post(gw)
        assert got == 503 and headers.get("retry-after") == "1"
        assert "accepted a connection" in str(doc["error"])
    finally:
        gw.stop()
