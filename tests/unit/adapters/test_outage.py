"""Outage logging in synthetic time: first failure, periodic summaries, recovery."""

from __future__ import annotations

import logging

import pytest

from adapters.outage import Outage


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_once_then_summarised_then_ended(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outage = Outage(logging.getLogger("test.outage"), "redis", every_s=60, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.outage"):
        for _ in range(59):  # one failure a second for just under a minute
            outage.failed(ConnectionError("refused"), "serving on")
            clock.now += 1
        assert outage.down and outage.failures == 59
        assert [r.getMessage() for r in caplog.records] == [
            "redis unavailable: refused; serving on"]
        clock.now += 1  # a minute after the first failure
        outage.failed(ConnectionError("refused"))
        assert len(caplog.records) == 2
        assert "still unavailable after 60s (60 failures)" in caplog.records[1].getMessage()
        clock.now += 0.5
        outage.ok()
        outage.ok()  # healthy again: nothing more
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING", "INFO"]
    assert caplog.records[2].getMessage() == "redis is back after 60.5s (60 failures)"
    assert not outage.down and outage.failures == 0
