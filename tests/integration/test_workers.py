"""``servegate gateway --workers 2`` in front of real Triton: both workers serve one port (REST
and gRPC), ``/metrics`` from any of them counts the whole pod, a worker that dies is started
again, SIGHUP reaches every worker, SIGTERM drains all (exit 0), and a SIGKILLed parent leaves
no worker behind."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from servegate.local.launch import TritonProcess
from tests.conftest import pool_config
from tests.harness import GatewayProcess, start_gateway, wait_for

REQUESTS = "servegate_requests_total"
BODY = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32",
                               "data": [0.5] * 16}]}).encode()


def infer(gw: GatewayProcess) -> int:
    """One REST infer on a fresh connection (urllib opens one per call)."""
    req = urllib.request.Request(f"{gw.url}/v2/models/classifier/infer", data=BODY,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def total(text: str, name: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name)


def workers(gw: GatewayProcess) -> list[psutil.Process]:
    return psutil.Process(gw.proc.pid).children()


def worker_metrics(worker: psutil.Process) -> str:
    """A worker's own exposition, from its private socket (beside its settings file)."""
    path = Path(worker.cmdline()[-1]).with_suffix(".sock")  # worker-<i>.settings -> .sock
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    return body.decode()


def pod_complete(gw: GatewayProcess, n: int = 2) -> bool:
    text = gw.metrics()
    return (total(text, "servegate_metrics_workers") == n
            and total(text, "servegate_metrics_workers_missing") == 0)


def start_pod(triton_pool: list[TritonProcess], workdir: Path) -> GatewayProcess:
    gw = start_gateway(pool_config(triton_pool), workdir, "--workers", "2")
    wait_for(lambda: pod_complete(gw), 30, "both workers serving")
    return gw


@pytest.fixture
def pod(triton_pool: list[TritonProcess], tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = start_pod(triton_pool, tmp_path)
    yield gw
    gw.stop()


def test_both_workers_serve_and_any_worker_reports_the_pod_total(pod: GatewayProcess) -> None:
    sent = 60
    assert [infer(pod) for _ in range(sent)] == [200] * sent
    client = grpcclient.InferenceServerClient(pod.grpc)
    try:
        x = np.full((1, 16), 0.5, dtype=np.float32)
        inp = grpcclient.InferInput("INPUT", [1, 16], "FP32")
        inp.set_data_from_numpy(x)
        for _ in range(4):
            assert client.infer("classifier", [inp]).get_response().model_name == "classifier"
    finally:
        client.close()
    sent += 4
    per_worker = [total(worker_metrics(w), REQUESTS) for w in workers(pod)]
    assert len(per_worker) == 2
    assert all(n > 0 for n in per_worker), per_worker  # the port's connections reach both
    assert sum(per_worker) == sent
    for _ in range(6):  # each scrape is a fresh connection: whichever worker answers, the pod
        assert total(pod.metrics(), REQUESTS) == sent


def test_a_worker_that_dies_is_started_again(pod: GatewayProcess) -> None:
    victim = workers(pod)[0]
    victim.kill()
    wait_for(lambda: victim.pid not in {w.pid for w in workers(pod)}
             and len(workers(pod)) == 2 and pod_complete(pod), 30, "a new worker in its place")
    assert "exited unexpectedly" in pod.log()
    assert infer(pod) == 200


def test_sighup_reaches_every_worker(pod: GatewayProcess) -> None:
    pod.reload()  # the same file: each worker reloads it once, the pod counts two reloads
    wait_for(lambda: total(pod.metrics(), "servegate_config_reloads_total") == 2, 20,
             "both workers reloaded")


def test_sigterm_drains_every_worker_and_exits_0(pod: GatewayProcess) -> None:
    children = workers(pod)
    pod.proc.send_signal(signal.SIGTERM)
    assert pod.proc.wait(20) == 0
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert "all 2 workers stopped" in pod.log()


def test_sigkill_of_the_parent_leaves_no_worker(pod: GatewayProcess) -> None:
    children = workers(pod)
    pod.proc.kill()
    pod.proc.wait(5)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], [p.pid for p in alive]


def test_a_worker_failing_its_first_start_stops_the_pod(
        triton_pool: list[TritonProcess], tmp_path: Path) -> None:
    with socket.socket() as taken:  # the port is held without SO_REUSEPORT: no worker binds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "servegate.yaml"
        config.write_text(json.dumps(pool_config(triton_pool)))
        proc = subprocess.run(
            [sys.executable, "-m", "servegate.cli", "gateway", "--config", str(config),
             "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", "0", "--workers", "2"],
            capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "cannot serve REST" in proc.stderr
