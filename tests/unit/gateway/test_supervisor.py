"""gateway.jobs.supervisor: a crashed background job is logged, turns readiness off and runs
again after its backoff; a job that returns is done; cancelling the supervisor stops all."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.jobs.supervisor import Supervisor


async def until(predicate: object, timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_a_crash_is_logged_turns_readiness_off_and_restarts(
        caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    release = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("boom")
        await release.wait()
        await asyncio.Event().wait()

    sup = Supervisor(backoff_s=0.2)
    sup.add("flaky", flaky)
    task = asyncio.create_task(sup.run())
    try:
        await until(lambda: not sup.healthy)
        assert sup.down() == ["flaky"]
        assert any("flaky crashed" in r.getMessage() and r.exc_info for r in caplog.records)
        await until(lambda: runs == 2)
        assert sup.healthy and sup.state["flaky"].restarts == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_backoff_doubles_while_the_job_keeps_failing() -> None:
    async def broken() -> None:
        raise ValueError("always")

    sup = Supervisor(backoff_s=0.01, max_backoff_s=0.04)
    sup.add("broken", broken)
    task = asyncio.create_task(sup.run())
    try:
        await until(lambda: sup.state["broken"].restarts >= 4)
        assert sup.state["broken"].backoff_s == 0.04
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_returning_job_is_done_and_cancel_stops_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    cancelled = asyncio.Event()

    async def nothing_to_do() -> None:
        return None

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    sup = Supervisor()
    sup.add("quick", nothing_to_do)
    sup.add("forever", forever)
    with caplog.at_level(logging.DEBUG, logger="servegate.jobs"):
        task = asyncio.create_task(sup.run())
        await asyncio.sleep(0.05)
        assert sup.healthy and sup.state["quick"].restarts == 0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert cancelled.is_set()
