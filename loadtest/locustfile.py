"""Locust scenarios for servegate: REST (V2 JSON and binary tensors) and gRPC users, load shapes.

Users (both run unless you pick one with locust's ``--class-picker`` or by naming it):

- ``RestUser`` (weight 3): ``classifier`` with a V2 JSON body (16 FP32 -> PROBS [1,4]), sticky
  on a per-user ``x-user-id`` so the classifier's split and shadow see realistic keys, and
  ``identity`` with the binary tensor extension (64 KiB FP32 in, binary out), every answer
  checked (status, output name, shape, byte count).
- ``GrpcUser`` (weight 1): ``classifier`` through ``tritonclient.grpc`` against the gateway's
  gRPC port; each call is reported to locust with ``environment.events.request.fire``.

Shapes (``--shape NAME`` or ``SERVEGATE_SHAPE=NAME``; without one, ``-u/-r/-t`` apply as usual).
Each reads ``-u`` (base users, default 10), ``-r`` (spawn rate) and ``-t`` (length, default
per shape) so one command line scales them:

- ``steady``: ``-u`` users for the whole run.
- ``spike``: ``-u`` users, then 10x ``-u`` for the middle fifth of the run, then back.
- ``burst``: 0 users for ``SERVEGATE_IDLE_S`` (default 90 s: long enough for a pool to scale
  to zero), then ``-u`` users at once: the 0 -> 1 cold start.
- ``canary``: users ramp from 1 to ``-u`` while a canary rollout runs: at the start it calls
  ``POST /admin/models/{model}/rollout`` (token from ``SERVEGATE_ADMIN_TOKEN``; model and
  variant from ``SERVEGATE_CANARY_MODEL``/``SERVEGATE_CANARY_VARIANT``, default
  ``classifier``/``canary``; ``SERVEGATE_ROLLOUT`` may hold the whole JSON body), and at the end
  it logs the rollout's state and history.

Environment: ``SERVEGATE_GRPC`` is the gateway's gRPC address (default: ``--host``'s host, port
8001). Examples::

    locust -f loadtest/locustfile.py --headless -u 10 -r 5 -t 1m --host http://127.0.0.1:8000
    SERVEGATE_SHAPE=spike locust -f loadtest/locustfile.py --headless -u 20 -r 20 -t 5m \\
        --host http://gateway:8000
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
import urllib.error
import urllib.request
from abc import abstractmethod
from typing import Any
from urllib.parse import urlsplit

# gRPC's own threads do not cooperate with gevent; this makes grpcio yield to locust's
# greenlets. It must run before the first channel is created.
import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import FastHttpUser, LoadTestShape, User, between, events, task

grpc_gevent.init_gevent()

import tritonclient.grpc as tgrpc  # noqa: E402  (after init_gevent)

log = logging.getLogger("servegate.locust")

FEATURES = 16
IDENTITY_FLOATS = 16 * 1024  # 64 KiB of FP32
SHAPES = ("steady", "spike", "burst", "canary")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _argv_option(flag: str) -> str | None:
    """A ``--flag value`` / ``--flag=value`` from the command line, read at import time.

    Locust collects shape classes while importing the locustfile, before it parses custom
    options, so the shape must be known here; the option is also registered below so that
    locust accepts it and lists it in ``--help``.
    """
    argv = sys.argv[1:]
    for n, arg in enumerate(argv):
        if arg == flag and n + 1 < len(argv):
            return argv[n + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--shape", choices=SHAPES, default=None, include_in_web_ui=False,
                        help="load shape: steady, spike, burst (0->1) or canary "
                             "(default: $SERVEGATE_SHAPE; none: -u/-r/-t as usual)")


# --- request bodies -----------------------------------------------------------------------

def classifier_json(rng: random.Random) -> bytes:
    data = [round(rng.uniform(-1, 1), 4) for _ in range(FEATURES)]
    return json.dumps({"inputs": [{"name": "INPUT", "shape": [1, FEATURES], "datatype": "FP32",
                                   "data": data}]}).encode()


def identity_binary(payload: bytes) -> tuple[bytes, dict[str, str]]:
    """A V2 request with the binary tensor extension: JSON header, then the raw tensor."""
    header = json.dumps({
        "inputs": [{"name": "DATA", "shape": [1, IDENTITY_FLOATS], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(payload)}}],
        "outputs": [{"name": "OUTPUT", "parameters": {"binary_data": True}}],
    }).encode()
    return header + payload, {"Inference-Header-Content-Length": str(len(header)),
                              "Content-Type": "application/octet-stream"}


def check_classifier(body: dict[str, Any]) -> str | None:
    outs = {o.get("name"): o for o in body.get("outputs", [])}
    probs = outs.get("PROBS")
    if probs is None or probs.get("shape") != [1, 4]:
        return f"unexpected outputs: {sorted(outs)}"
    if abs(sum(probs["data"]) - 1.0) > 1e-3:
        return f"PROBS do not sum to 1: {probs['data']}"
    return None


def check_identity(content: bytes, header_len: str | None, payload: bytes) -> str | None:
    if header_len is None:
        return "no Inference-Header-Content-Length in the response"
    n = int(header_len)
    head = json.loads(content[:n])
    (out,) = head["outputs"]
    size = out.get("parameters", {}).get("binary_data_size")
    if out["name"] != "OUTPUT" or size != len(payload):
        return f"unexpected output {out}"
    if content[n:n + size] != payload:
        return "OUTPUT differs from DATA"
    return None


# --- users --------------------------------------------------------------------------------

class RestUser(FastHttpUser):
    """KServe V2 over HTTP: JSON to ``classifier``, binary tensors to ``identity``."""

    weight = 3
    wait_time = between(0.01, 0.05)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.user_id = f"user-{self.rng.randrange(1_000_000)}"
        floats = np.random.default_rng().random(IDENTITY_FLOATS, dtype=np.float32)
        self.payload = floats.astype("<f4").tobytes()

    @task(3)
    def classifier(self) -> None:
        with self.client.post("/v2/models/classifier/infer", data=classifier_json(self.rng),
                              headers={"Content-Type": "application/json",
                                       "x-user-id": self.user_id},
                              name="REST classifier (JSON)", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            problem = check_classifier(resp.json())
            if problem:
                resp.failure(problem)

    @task(1)
    def identity(self) -> None:
        body, headers = identity_binary(self.payload)
        with self.client.post("/v2/models/identity/infer", data=body, headers=headers,
                              name="REST identity (binary 64 KiB)",
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            problem = check_identity(resp.content or b"",
                                     resp.headers.get("Inference-Header-Content-Length"),
                                     self.payload)
            if problem:
                resp.failure(problem)


def grpc_target(host: str | None) -> str:
    explicit = os.environ.get("SERVEGATE_GRPC")
    if explicit:
        return explicit
    hostname = urlsplit(host or "http://127.0.0.1:8000").hostname or "127.0.0.1"
    return f"{hostname}:8001"


class _GrpcClient(tgrpc.InferenceServerClient):  # type: ignore[misc]
    """tritonclient's gRPC client without its ``__del__``: closing a channel from the garbage
    collector at interpreter exit can block forever under gevent (seen as a locust run that
    never exits). Users close their client in ``on_stop``, and locust's ``quitting`` event
    closes any a stopped user left open."""

    open_clients: set[_GrpcClient] = set()

    def __init__(self, url: str) -> None:
        super().__init__(url)
        _GrpcClient.open_clients.add(self)

    def close(self) -> None:
        if self in _GrpcClient.open_clients:
            _GrpcClient.open_clients.discard(self)
            super().close()

    def __del__(self) -> None:
        pass


@events.quitting.add_listener
def _close_grpc_clients(**_: Any) -> None:
    for client in list(_GrpcClient.open_clients):
        client.close()


class GrpcUser(User):
    """``inference.GRPCInferenceService/ModelInfer`` through tritonclient.grpc."""

    weight = 1
    wait_time = between(0.01, 0.05)

    def on_start(self) -> None:
        self.target = grpc_target(self.host)
        self.triton = _GrpcClient(self.target)
        self.rng = np.random.default_rng()

    def on_stop(self) -> None:
        self.triton.close()

    def _call(self, name: str, fn: Any) -> None:
        start, started = time.perf_counter(), time.time()
        exc: BaseException | None = None
        length = 0
        try:
            length = fn()
        except Exception as e:  # reported to locust as a failure, never raised
            exc = e
        self.environment.events.request.fire(
            request_type="grpc", name=name, start_time=started,
            response_time=(time.perf_counter() - start) * 1000, response_length=length,
            response=None, context={}, exception=exc, url=self.target)

    @task
    def classifier(self) -> None:
        def infer() -> int:
            x = self.rng.random((1, FEATURES), dtype=np.float32)
            inp = tgrpc.InferInput("INPUT", [1, FEATURES], "FP32")
            inp.set_data_from_numpy(x)
            probs = self.triton.infer("classifier", [inp], client_timeout=30).as_numpy("PROBS")
            if probs is None or probs.shape != (1, 4):
                raise AssertionError(f"unexpected PROBS: {probs!r}")
            return int(probs.nbytes)

        self._call("gRPC classifier", infer)


# --- load shapes --------------------------------------------------------------------------

class _Shape(LoadTestShape):
    """Base: reads -u / -r / -t as the base users, spawn rate and length."""

    abstract = True
    use_common_options = True
    default_seconds = 300.0

    def _opts(self) -> tuple[int, float, float]:
        o = self.runner.environment.parsed_options if self.runner else None
        users = int(getattr(o, "num_users", None) or 10)
        rate = float(getattr(o, "spawn_rate", None) or max(1, users))
        seconds = float(getattr(o, "run_time", None) or self.default_seconds)
        return users, rate, seconds

    def tick(self) -> tuple[int, float] | None:
        users, rate, seconds = self._opts()
        return self.plan(self.get_run_time(), users, rate, seconds)

    @staticmethod
    @abstractmethod
    def plan(t: float, users: int, rate: float, seconds: float) -> tuple[int, float] | None:
        """(users, spawn rate) at ``t`` seconds into the run, or None to stop."""


class SteadyShape(_Shape):
    abstract = True

    @staticmethod
    def plan(t: float, users: int, rate: float, seconds: float) -> tuple[int, float] | None:
        return (users, rate) if t < seconds else None


class SpikeShape(_Shape):
    """Base load, 10x for the middle fifth of the run (spawned at once), base load again."""

    abstract = True

    @staticmethod
    def plan(t: float, users: int, rate: float, seconds: float) -> tuple[int, float] | None:
        if t >= seconds:
            return None
        if 0.4 * seconds <= t < 0.6 * seconds:
            return users * 10, users * 10.0
        return users, max(rate, users * 10.0)


class BurstShape(_Shape):
    """Nothing for SERVEGATE_IDLE_S (the pool scales to zero), then all users at once."""

    abstract = True

    @staticmethod
    def plan(t: float, users: int, rate: float, seconds: float) -> tuple[int, float] | None:
        idle = _env_float("SERVEGATE_IDLE_S", 90.0)
        if t >= idle + seconds:
            return None
        return (0, float(users)) if t < idle else (users, float(users))


class CanaryShape(_Shape):
    """Users ramp 1 -> -u over the run while a canary rollout goes through its steps."""

    abstract = True
    started_rollout = False

    @staticmethod
    def plan(t: float, users: int, rate: float, seconds: float) -> tuple[int, float] | None:
        if t >= seconds:
            return None
        return max(1, round(users * min(1.0, t / (0.8 * seconds)))), rate

    def tick(self) -> tuple[int, float] | None:
        if not self.started_rollout:
            self.started_rollout = True
            start_rollout(self.runner.environment.host if self.runner else None)
        result = super().tick()
        if result is None:
            log.info("rollout at the end: %s", admin(self._host(), "GET", "/rollout"))
        return result

    def _host(self) -> str | None:
        return self.runner.environment.host if self.runner else None


def canary_target() -> tuple[str, str]:
    return (os.environ.get("SERVEGATE_CANARY_MODEL", "classifier"),
            os.environ.get("SERVEGATE_CANARY_VARIANT", "canary"))


def admin(host: str | None, method: str, suffix: str,
          body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call ``/admin/models/{canary model}{suffix}`` with the token from the environment."""
    token = os.environ.get("SERVEGATE_ADMIN_TOKEN", "")
    if not token:
        raise RuntimeError("the canary shape needs SERVEGATE_ADMIN_TOKEN (the admin API token)")
    model, _ = canary_target()
    url = f"{(host or 'http://127.0.0.1:8000').rstrip('/')}/admin/models/{model}{suffix}"
    req = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode() or "{}"
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {url}: HTTP {e.code} {e.read()[:300]!r}") from e
    result: dict[str, Any] = json.loads(text)
    return result


def start_rollout(host: str | None) -> dict[str, Any]:
    _, variant = canary_target()
    raw = os.environ.get("SERVEGATE_ROLLOUT")
    body = json.loads(raw) if raw else {
        "canary": variant, "steps": [5, 10, 25, 50, 100], "interval_s": 30, "min_samples": 50}
    answer = admin(host, "POST", "/rollout", body)
    log.info("canary rollout started: %s", answer)
    return answer


def selected_shape() -> str | None:
    name = _argv_option("--shape") or os.environ.get("SERVEGATE_SHAPE") or None
    if name is not None and name not in SHAPES:
        raise SystemExit(f"unknown shape {name!r}; choose one of {', '.join(SHAPES)}")
    return name


_SELECTED = selected_shape()
if _SELECTED is not None:
    # The one concrete shape class locust finds in this module.
    _base = {"steady": SteadyShape, "spike": SpikeShape, "burst": BurstShape,
             "canary": CanaryShape}[_SELECTED]
    SelectedShape = type(f"{_base.__name__}Selected", (_base,), {"abstract": False})
