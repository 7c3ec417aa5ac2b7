"""Triton in explicit model-control mode over a generated repository of small models.

Where it sits: behind a model-managed pool in the demo, the tests and the multi-model
benchmark (never on the request path). :func:`write_zoo` writes a model repository of
Python-backend models ``<prefix>-00`` ... (``config.pbtxt`` + ``1/model.py``): one signature,
``INPUT`` FP32 [n, 16] -> ``PROBS`` FP32 [n, 4] (softmax of a linear layer), different
weights per model. :func:`start_zoo_triton` runs the ``tritonserver`` binary shipped in the
``nvidia-pytriton`` wheel with ``--model-control-mode=explicit`` on it, so nothing is loaded
until someone calls ``POST /v2/repository/models/{m}/load``.

The binary needs ``LD_LIBRARY_PATH`` = the interpreter's LIBDIR plus the wheel's
``nvidia_pytriton.libs``, and a backend directory whose ``python/`` holds the wheel's
``libtriton_python.so``, ``triton_python_backend_utils.py`` and the
``python_backend_stubs/<py>/triton_python_backend_stub`` (PyTriton's own layout); the stub
finds this interpreter's packages (numpy) through ``PATH``, as PyTriton arranges it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.procs import WorkerSpec
from servegate.local.launch import TritonProcess, start_process, triton_env

INPUT_DIM = 16
OUTPUT_DIM = 4

_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 8
input [{{ name: "INPUT", data_type: TYPE_FP32, dims: [ {inp} ] }}]
output [{{ name: "PROBS", data_type: TYPE_FP32, dims: [ {out} ] }}]
instance_group [{{ kind: KIND_CPU, count: 1 }}]
"""

_MODEL = '''"""Zoo model {name}: softmax(INPUT @ W + b), weights seeded by {seed}."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        rng = np.random.default_rng({seed})
        self.w = rng.standard_normal(({inp}, {out})).astype(np.float32)
        self.b = rng.standard_normal({out}).astype(np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            z = x @ self.w + self.b
            z = np.exp(z - z.max(axis=-1, keepdims=True))
            probs = (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("PROBS", probs)]))
        return responses
'''


def zoo_names(count: int, prefix: str = "zoo") -> list[str]:
    width = max(2, len(str(count - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(count)]


def write_zoo(root: Path, names: Sequence[str]) -> Path:
    """A model repository under ``root`` with one small Python-backend model per name."""
    root.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        version = root / name / "1"
        version.mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(
            _CONFIG.format(name=name, inp=INPUT_DIM, out=OUTPUT_DIM))
        (version / "model.py").write_text(
            _MODEL.format(name=name, seed=seed, inp=INPUT_DIM, out=OUTPUT_DIM))
    return root


def _wheel_dir() -> Path:
    """The wheel's ``pytriton/tritonserver`` (found without importing PyTriton)."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the nvidia-pytriton wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def backend_dir(root: Path) -> Path:
    """``root/python`` laid out as the Python backend expects, linking the wheel's files."""
    wheel = _wheel_dir()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    target = root / "python"
    target.mkdir(parents=True, exist_ok=True)
    sources = {
        "libtriton_python.so": wheel / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py":
            wheel / "backends" / "python" / "triton_python_backend_utils.py",
        "triton_python_backend_stub":
            wheel / "python_backend_stubs" / py / "triton_python_backend_stub",
    }
    for name, source in sources.items():
        if not source.exists():
            raise RuntimeError(f"the nvidia-pytriton wheel has no {source}")
        link = target / name
        if not link.exists():
            shutil.copy2(source, link)
    return root


def zoo_env() -> dict[str, str]:
    """:func:`triton_env` plus the wheel's bundled libraries and this interpreter's path."""
    env = triton_env()
    libs = _wheel_dir().parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (env["LD_LIBRARY_PATH"], str(libs)) if p)
    # The stub embeds Python and finds its prefix (this venv, hence numpy) through PATH.
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def start_zoo_triton(repository: Path, workdir: Path, timeout: float = 60.0,
                     extra_args: Sequence[str] = (), ports: tuple[int, int, int] | None = None,
                     own_session: bool = True) -> TritonProcess:
    """``tritonserver --model-control-mode=explicit`` on ``repository``, on ``ports`` (HTTP,
    gRPC, metrics; free ones by default); waits (with a deadline) until
    ``/v2/health/ready`` answers 200. Nothing is loaded. ``own_session=False`` keeps it in the
    caller's process group (a worker whose group is signalled stops it too)."""
    def argv(p: tuple[int, int, int]) -> list[str]:
        return [
            str(_wheel_dir() / "bin" / "tritonserver"),
            f"--model-repository={repository}", "--model-control-mode=explicit",
            f"--backend-directory={backends}", f"--http-port={p[0]}", f"--grpc-port={p[1]}",
            f"--metrics-port={p[2]}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
            "--log-verbose=0", "--exit-on-error=false",
            # Ready means "serving": with strict readiness Triton answers /v2/health/ready with
            # 400 while any model loads, and the gateway's prober would eject the endpoint.
            "--strict-readiness=false",
            # Python-backend shared memory regions are named by this prefix: unique per server,
            # or two servers on one machine would share (and corrupt) each other's regions.
            f"--backend-config=python,shm-region-prefix-name=servegate_zoo_{os.getpid()}_{p[0]}_",
            "--backend-config=python,shm-default-byte-size=4194304",
            *extra_args,
        ]

    backends = backend_dir(workdir / "backends")
    spec = WorkerSpec(argv, "", start_timeout_s=timeout, attempts=1, ports=ports,
                      ready_url=lambda p: f"http://127.0.0.1:{p[0]}/v2/health/ready",
                      own_session=own_session)
    return start_process(spec, f"zoo-triton-{workdir.name}", zoo_env())


def start_zoo_servers(workdir: Path, servers: int = 2, models: int = 30,
                      prefix: str = "zoo") -> list[TritonProcess]:
    """``servers`` explicit-mode Tritons sharing one repository of ``models`` zoo models;
    all or nothing (the ones started are stopped if another fails)."""
    repo = write_zoo(workdir / "repository", zoo_names(models, prefix))
    started: list[TritonProcess] = []
    try:
        for i in range(servers):
            started.append(start_zoo_triton(repo, workdir / f"server-{i}"))
    except BaseException:
        for tp in started:
            tp.stop()
        raise
    return started


def add_zoo_pool(config: dict[str, Any], servers: Sequence[TritonProcess], models: int = 30,
                 per_endpoint: int = 4, prefix: str = "zoo", pool: str = "zoo",
                 **residency: Any) -> dict[str, Any]:
    """Add a model-managed pool ``pool`` of ``servers`` serving ``models`` zoo models (at most
    ``per_endpoint`` loaded on each) to a gateway config dict; returns the config."""
    config.setdefault("pools", {})[pool] = {
        "endpoints": [{"http": s.http, "grpc": s.grpc, "metrics": s.metrics} for s in servers],
        "health": {"probe_interval_s": 1.0},
        "model_control": "explicit",
        "capacity": {"models": per_endpoint},
        "residency": {"idle_grace_s": 60, "min_residency_s": 5, **residency},
    }
    routes = config.setdefault("models", {})
    for name in zoo_names(models, prefix):
        routes[name] = {"pool": pool}
    return config
