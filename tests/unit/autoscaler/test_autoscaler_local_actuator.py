"""The local actuator's process handling with a stand-in worker (a few lines of Python that
behave like ``servegate.local.triton_worker``: ready line, SIGTERM stops it). The real Triton
path is in tests/integration/test_autoscaler_local.py."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psutil
import pytest

from autoscaler.actuators.local import LocalActuator
from autoscaler.errors import ActuatorError
from contracts.autoscaling import LocalReplicaConfig

WORKER = '''
import argparse, signal, sys, time
p = argparse.ArgumentParser()
for flag in ("--http-port", "--grpc-port", "--metrics-port", "--models"):
    p.add_argument(flag)
p.add_argument("--delay", type=float, default=0.0)
p.add_argument("--crash-after", type=float, default=0.0)
p.add_argument("--never-ready", action="store_true")
args = p.parse_args()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(args.delay)
if not args.never_ready:
    print("SERVEGATE_TRITON_READY", flush=True)
start = time.monotonic()
while True:
    time.sleep(0.02)
    if args.crash_after and time.monotonic() - start > args.crash_after:
        sys.exit(3)
'''


def pools(tmp: Path, **overrides: object) -> dict[str, LocalReplicaConfig]:
    (tmp / "fake_worker.py").write_text(WORKER)
    base: dict[str, object] = {"module": "fake_worker", "models": ["identity"],
                               "start_timeout_s": 10, "stop_timeout_s": 5, "drain_s": 0}
    return {"cpu": LocalReplicaConfig.model_validate({**base, **overrides})}


def workers(tmp: Path) -> list[psutil.Process]:
    """This test's stand-in workers that are still running."""
    out = []
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        if "fake_worker" in (p.info.get("cmdline") or []) and p.info.get("cwd") == str(tmp) \
                and p.info.get("status") != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_scale_up_lists_ready_replicas_and_scale_down_drains(tmp_path: Path) -> None:
    async with LocalActuator(pools(tmp_path), cwd=str(tmp_path)) as local:
        version, eps = local.endpoints("cpu")
        assert (version, eps) == (0, [])
        await local.scale("cpu", 2)
        assert await local.current("cpu") == 2 and await local.ready("cpu") == 0
        version, eps = await local.wait_endpoints("cpu", 0, 10)
        await wait_until(lambda: len(local.endpoints("cpu")[1]) == 2)
        assert await local.ready("cpu") == 2
        eps = local.endpoints("cpu")[1]
        assert len({e.http for e in eps}) == 2 and all(e.http.startswith("127.0.0.1:")
                                                       for e in eps)
        assert len(workers(tmp_path)) == 2
        await local.scale("cpu", 2)  # idempotent: nothing starts or stops
        assert len(workers(tmp_path)) == 2
        before = local.endpoints("cpu")[0]
        await local.scale("cpu", 1)
        assert await local.current("cpu") == 1
        assert len(local.endpoints("cpu")[1]) == 1 and local.endpoints("cpu")[0] > before
        await wait_until(lambda: len(workers(tmp_path)) == 1)
    assert workers(tmp_path) == []


async def test_a_crashed_replica_leaves_the_list(tmp_path: Path) -> None:
    async with LocalActuator(pools(tmp_path, args=["--crash-after", "0.3"]),
                             cwd=str(tmp_path)) as local:
        await local.scale("cpu", 1)
        await wait_until(lambda: len(local.endpoints("cpu")[1]) == 1)
        await wait_until(lambda: local.endpoints("cpu")[1] == [])
        assert await local.current("cpu") == 0


async def test_a_start_that_never_gets_ready_fails_and_is_cleaned_up(tmp_path: Path) -> None:
    cfg = pools(tmp_path, args=["--never-ready"], start_timeout_s=0.5, start_attempts=1)
    async with LocalActuator(cfg, cwd=str(tmp_path)) as local:
        await local.scale("cpu", 1)
        await wait_until(lambda: local.start_failures == 1)
        assert await local.current("cpu") == 0
        await wait_until(lambda: workers(tmp_path) == [])


async def test_leaving_stops_starting_replicas_too(tmp_path: Path) -> None:
    async with LocalActuator(pools(tmp_path, args=["--delay", "30"]),
                             cwd=str(tmp_path)) as local:
        await local.scale("cpu", 2)
        await wait_until(lambda: len(workers(tmp_path)) == 2)
        await local.scale("cpu", 1)  # a start in progress is cancelled: its process stops
        await wait_until(lambda: len(workers(tmp_path)) == 1)
    assert workers(tmp_path) == []


async def test_cancelling_the_owner_stops_every_process(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def owner() -> None:
        async with LocalActuator(pools(tmp_path), cwd=str(tmp_path)) as local:
            await local.scale("cpu", 2)
            await wait_until(lambda: len(local.endpoints("cpu")[1]) == 2)
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(owner())
    await asyncio.wait_for(started.wait(), 10)
    pids = [p.pid for p in workers(tmp_path)]
    assert len(pids) == 2 and all(os.getpgid(pid) == pid for pid in pids)  # own sessions
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert workers(tmp_path) == []


async def test_unknown_pool_and_use_outside_the_context(tmp_path: Path) -> None:
    local = LocalActuator(pools(tmp_path), cwd=str(tmp_path))
    with pytest.raises(ActuatorError, match="no 'local' replica config"):
        await local.current("gpu")
    with pytest.raises(ActuatorError, match="outside"):
        await local.scale("cpu", 1)
