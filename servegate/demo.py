"""``servegate demo``: real Triton servers, the gateway in front, on one machine.

Starts six Triton servers: the demo pool ``cpu`` (``--triton-instances`` servers with
classifier v1, embedder and identity), a ``canary`` pool with classifier v2 and a ``shadow``
pool with classifier v3, and the model-managed pool ``zoo`` (two servers in explicit
model-control mode over 30 small models, at most 4 loaded each, loaded on demand). The
config splits ``classifier`` 90/10 between v1 and v2, sticky on the ``x-user-id`` header,
and mirrors 10% of its requests to v3, whose outputs are compared with the primary's. It
writes the config and an admin token to a temporary directory, runs ``servegate gateway`` on
them with ``--watch`` and prints commands to paste. Ctrl-C (or SIGTERM) stops every process
it started.
"""

from __future__ import annotations

import secrets
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
from typing import Any

import yaml

from adapters.errors import ProcessStartError
from adapters.procs import die_with_parent
from servegate.local.launch import TritonProcess, start_triton
from servegate.local.zoo import add_zoo_pool, start_zoo_servers


@dataclass(frozen=True)
class DemoSettings:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    triton_instances: int = 2
    log_level: str = "info"
    autoscaler_port: int = 9096
    keda_port: int = 9095


def demo_config(main: list[TritonProcess], canary: TritonProcess, shadow: TritonProcess,
                gateway_url: str = "", autoscaler_url: str = "") -> dict[str, Any]:
    def pool(procs: list[TritonProcess]) -> dict[str, Any]:
        return {"endpoints": [{"http": p.http, "grpc": p.grpc, "metrics": p.metrics}
                              for p in procs],
                "health": {"probe_interval_s": 1.0},
                # Illustrative: the demo runs on CPU, priced as if each server were one GPU.
                "cost": {"gpus_per_replica": 1, "price_per_gpu_hour": 2.5}}

    return {
        "pools": {
            "cpu": pool(main), "canary": pool([canary]), "shadow": pool([shadow]),
            # Scaled to zero by the autoscaler's local actuator: requests are held while a
            # Triton replica starts, and the pool goes back to zero after 20 s without traffic.
            "cold": {"discovery": {"type": "local", "url": autoscaler_url},
                     "cold_start": {"enabled": True, "max_wait_s": 120},
                     "health": {"probe_interval_s": 1.0}},
        },
        "models": {
            "classifier": {
                "pool": "cpu",
                "versions": {"2": {"pool": "canary"}, "3": {"pool": "shadow"}},
                "split": {
                    "baseline": "stable",
                    "sticky_header": "x-user-id",
                    "variants": {
                        "stable": {"weight": 90, "version": 1},
                        "canary": {"weight": 10, "version": 2},
                        "shadow": {"weight": 0, "version": 3},
                    },
                    "shadow": {"variant": "shadow", "percent": 10},
                },
            },
            "embedder": {"pool": "cpu"},
            "identity": {"pool": "cpu"},
            "cold-classifier": {"pool": "cold"},
        },
        "autoscaling": {
            "signals": {"gateways": [gateway_url]},
            "pools": {"cold": {
                "min_replicas": 0, "max_replicas": 2, "targets": {"rate_per_replica": 200},
                "scale_to_zero_grace_s": 20, "local": {"models": ["cold-classifier"]},
            }},
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


def _banner(s: DemoSettings, config_path: Path, token_path: Path) -> str:
    base = f"http://{s.host}:{s.http_port}"
    body = ('{"inputs":[{"name":"INPUT","shape":[1,16],"datatype":"FP32",'
            '"data":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.4,1.5,1.6]}]}')
    admin = f'-H "Authorization: Bearer $(cat {token_path})"'
    return f"""
servegate demo is up: gateway {base}, gRPC {s.host}:{s.grpc_port}
(config: {config_path}, reloaded on change)

  curl -s {base}/v2/health/ready -o /dev/null -w '%{{http_code}}\\n'
  curl -s -X POST {base}/v2/repository/index
  curl -s {base}/v2/models/classifier/versions/2/infer -d '{body}'   # one version, no split

  # classifier is split 90/10 (v1 stable, v2 canary); the response header names the variant:
  curl -si {base}/v2/models/classifier/infer -d '{body}' | grep -i x-servegate-variant
  # sticky: the same x-user-id always gets the same variant
  for i in 1 2 3; do curl -si -H 'x-user-id: alice' {base}/v2/models/classifier/infer \\
      -d '{body}' | grep -i x-servegate-variant; done
  # pin a variant for one call
  curl -si -H 'x-servegate-variant: canary' {base}/v2/models/classifier/infer -d '{body}'
  # 10% of classifier calls are mirrored to v3 and compared with the answer the client got:
  curl -s {base}/metrics | grep -E 'servegate_(shadow|split|variant)'

  # the pool "cold" is at zero: this request is held while the autoscaler starts a Triton,
  # and the response says how long it waited; 20 s later the pool is back at zero
  curl -si {base}/v2/models/cold-classifier/infer -d '{body}' | grep -i x-servegate-cold
  curl -s http://{s.host}:{s.autoscaler_port}/status
  # KEDA's external scaler (externalscaler.ExternalScaler, scalerMetadata pool=cold) is served
  # on {s.host}:{s.keda_port}

  # the pool "zoo" holds 30 models zoo-00 ... zoo-29 on two Tritons in explicit model-control
  # mode, at most 4 loaded per server: a model is loaded on its first call (the response says
  # how long it waited), the least recently used idle one is evicted to make room, and models
  # idle for 60 s are unloaded; the index says which are READY
  curl -si {base}/v2/models/zoo-07/infer -d '{body}' | grep -i x-servegate-cold
  curl -s -X POST {base}/v2/repository/index | tr '}}' '\n' | grep zoo- | grep -c READY
  curl -s {base}/metrics | grep -E 'servegate_(model_|resident)'

  # admin API (token in {token_path})
  curl -s {admin} {base}/admin/routes
  curl -s {admin} '{base}/admin/cost?window=1h'     # cost per pool, model and tenant
  SERVEGATE_ADMIN_TOKEN=$(cat {token_path}) servegate cost --url {base} --by model
  curl -s {admin} -X PUT {base}/admin/models/classifier/weights \\
      -H 'content-type: application/json' -d '{{"weights": {{"stable": 50, "canary": 50}}}}'
  curl -s {admin} -X POST {base}/admin/models/classifier/rollout \\
      -H 'content-type: application/json' -d '{{"canary": "canary", "interval_s": 30}}'

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

  python - <<'PY'   # gRPC: the same client library, tritonclient.grpc
import numpy as np, tritonclient.grpc as grpc
c = grpc.InferenceServerClient("{s.host}:{s.grpc_port}")
x = grpc.InferInput("INPUT", [2, 16], "FP32")
x.set_data_from_numpy(np.random.rand(2, 16).astype("float32"))
print(c.infer("classifier", [x], compression_algorithm="gzip").as_numpy("PROBS"))
PY

Ctrl-C stops everything.
"""


def start_demo_tritons(s: DemoSettings) -> list[TritonProcess]:
    """Main pool first, then the canary (v2) and shadow (v3) servers; all or nothing."""
    specs: list[tuple[tuple[str, ...], int]] = [
        *[(("classifier", "embedder", "identity"), 1)] * s.triton_instances,
        (("classifier",), 2), (("classifier",), 3)]
    started: list[TritonProcess] = []
    errors = []
    with ThreadPoolExecutor(max_workers=len(specs)) as ex:
        for f in [ex.submit(start_triton, models, version) for models, version in specs]:
            try:
                started.append(f.result())
            except Exception as exc:  # keep collecting, to stop the others
                errors.append(exc)
    if errors:
        stop_tritons(started)
        raise RuntimeError(f"{len(errors)} Triton server(s) failed to start: {errors[0]}")
    return started


def stop_tritons(tritons: list[TritonProcess]) -> None:
    with ThreadPoolExecutor(max_workers=max(1, len(tritons))) as ex:
        list(ex.map(lambda t: t.stop(), tritons))


def gateway_command(s: DemoSettings, config_path: Path, token_path: Path) -> list[str]:
    """``servegate gateway`` as the demo runs it (its own process; the soak benchmark too)."""
    return [sys.executable, "-m", "servegate.cli", "gateway", "--config", str(config_path),
            "--host", s.host, "--http-port", str(s.http_port), "--grpc-port", str(s.grpc_port),
            "--watch", "--log-level", s.log_level, "--admin-token-file", str(token_path),
            "--autoscaler-url", f"http://{s.host}:{s.autoscaler_port}"]


def autoscaler_command(s: DemoSettings, config_path: Path) -> list[str]:
    """``servegate autoscaler`` with the local actuator (and KEDA's scaler) as the demo runs it."""
    return [sys.executable, "-m", "servegate.cli", "autoscaler", "--config", str(config_path),
            "--actuator", "local", "--host", s.host, "--status-port", str(s.autoscaler_port),
            "--serve-keda", "--keda-port", str(s.keda_port)]


def run_demo(s: DemoSettings) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    tritons: list[TritonProcess] = []
    gateway: subprocess.Popen[bytes] | None = None
    autoscaler: subprocess.Popen[bytes] | None = None
    try:
        print(f"starting {s.triton_instances + 2} Triton servers ...", flush=True)
        try:
            tritons = start_demo_tritons(s)
            main = list(tritons)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        workdir = Path(tempfile.mkdtemp(prefix="servegate-demo-"))
        print("starting 2 Triton servers in explicit model-control mode (pool zoo) ...",
              flush=True)
        try:
            zoo = start_zoo_servers(workdir / "zoo")
        except (RuntimeError, ProcessStartError) as exc:
            print(exc, file=sys.stderr)
            return 1
        tritons += zoo
        config_path = workdir / "servegate.yaml"
        gateway_url = f"http://{s.host}:{s.http_port}"
        autoscaler_url = f"http://{s.host}:{s.autoscaler_port}"
        config_path.write_text(yaml.safe_dump(
            add_zoo_pool(demo_config(main[:-2], main[-2], main[-1], gateway_url, autoscaler_url),
                         zoo), sort_keys=False))
        token_path = workdir / "admin-token"
        token_path.write_text(secrets.token_urlsafe(24) + "\n")
        token_path.chmod(0o600)
        gateway = subprocess.Popen(gateway_command(s, config_path, token_path),
                                   start_new_session=True, preexec_fn=die_with_parent())
        autoscaler = subprocess.Popen(autoscaler_command(s, config_path),
                                      start_new_session=True, preexec_fn=die_with_parent())
        wait_ready(f"http://{s.host}:{s.http_port}/v2/health/ready", 30, gateway)
        wait_ready(f"{autoscaler_url}/status", 30, autoscaler)
        print(_banner(s, config_path, token_path), flush=True)
        while not stop.wait(0.5):
            for name, proc in (("gateway", gateway), ("autoscaler", autoscaler)):
                if proc.poll() is not None:
                    print(f"{name} exited", file=sys.stderr)
                    return 1
        return 0
    finally:
        print("stopping ...", flush=True)
        for proc in (gateway, autoscaler):
            terminate(proc)
        stop_tritons(tritons)


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
