"""``servegate demo``: real Triton servers, the gateway in front, on one machine.

Starts the demo pool (``--triton-instances`` Triton servers serving classifier v1, embedder
and identity), a one-server ``canary`` pool serving classifier version 2 (routed by version),
writes the routing config to a temporary directory, runs ``servegate gateway`` on it with
``--watch`` and prints commands to paste. Ctrl-C (or SIGTERM) stops every process it started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.demo.launch import TritonProcess, start_triton


@dataclass(frozen=True)
class DemoSettings:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    triton_instances: int = 2
    log_level: str = "info"


def demo_config(main: list[TritonProcess], canary: TritonProcess) -> dict[str, object]:
    def endpoints(procs: list[TritonProcess]) -> list[dict[str, str]]:
        return [{"http": p.http, "grpc": p.grpc, "metrics": p.metrics} for p in procs]

    return {
        "pools": {
            "cpu": {"endpoints": endpoints(main), "health": {"probe_interval_s": 1.0}},
            "canary": {"endpoints": endpoints([canary]), "health": {"probe_interval_s": 1.0}},
        },
        "models": {
            "classifier": {"pool": "cpu", "versions": {"2": {"pool": "canary"}}},
            "embedder": {"pool": "cpu"},
            "identity": {"pool": "cpu"},
        },
    }


def wait_ready(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:g}s")


def _banner(s: DemoSettings, config_path: Path) -> str:
    base = f"http://{s.host}:{s.http_port}"
    body = ('{"inputs":[{"name":"INPUT","shape":[1,16],"datatype":"FP32",'
            '"data":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.4,1.5,1.6]}]}')
    return f"""
servegate demo is up: gateway {base}  (config: {config_path}, reloaded on change)

  curl -s {base}/v2/health/ready -o /dev/null -w '%{{http_code}}\\n'
  curl -s -X POST {base}/v2/repository/index
  curl -s {base}/v2/models/classifier/infer -d '{body}'
  curl -s {base}/v2/models/classifier/versions/2/infer -d '{body}'   # the canary pool
  curl -s {base}/v2/models/classifier/stats
  curl -s {base}/metrics | grep servegate_

  python - <<'PY'
import numpy as np, tritonclient.http as http
c = http.InferenceServerClient("{s.host}:{s.http_port}")
x = http.InferInput("INPUT", [2, 16], "FP32")
x.set_data_from_numpy(np.random.rand(2, 16).astype("float32"))
print(c.infer("classifier", [x]).as_numpy("PROBS"))
t = http.InferInput("TEXT", [1, 1], "BYTES")
t.set_data_from_numpy(np.array([[b"hello triton"]], dtype=object))
print(c.infer("embedder", [t]).as_numpy("EMBEDDING")[0, :8])
PY

Ctrl-C stops everything.
"""


def run_demo(s: DemoSettings) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    tritons: list[TritonProcess] = []
    gateway: subprocess.Popen[bytes] | None = None
    try:
        print(f"starting {s.triton_instances + 1} Triton servers ...", flush=True)
        with ThreadPoolExecutor(max_workers=s.triton_instances + 1) as ex:
            main_f = [ex.submit(start_triton) for _ in range(s.triton_instances)]
            canary_f = ex.submit(start_triton, ("classifier",), 2)
            for f in [*main_f, canary_f]:
                try:
                    tritons.append(f.result())
                except Exception as exc:  # keep going to stop the others
                    print(exc, file=sys.stderr)
            if len(tritons) != s.triton_instances + 1:
                return 1
        workdir = Path(tempfile.mkdtemp(prefix="servegate-demo-"))
        config_path = workdir / "servegate.yaml"
        config_path.write_text(yaml.safe_dump(demo_config(tritons[:-1], tritons[-1])))
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(config_path),
             "--host", s.host, "--http-port", str(s.http_port), "--grpc-port", str(s.grpc_port),
             "--watch", "--log-level", s.log_level],
            start_new_session=True)
        wait_ready(f"http://{s.host}:{s.http_port}/v2/health/ready", 30, gateway)
        print(_banner(s, config_path), flush=True)
        while not stop.wait(0.5):
            if gateway.poll() is not None:
                print("gateway exited", file=sys.stderr)
                return 1
        return 0
    finally:
        print("stopping ...", flush=True)
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(15)
            except subprocess.TimeoutExpired:
                gateway.kill()
        with ThreadPoolExecutor(max_workers=max(1, len(tritons))) as ex:
            list(ex.map(lambda t: t.stop(), tritons))
