"""A spot pool preempted under load loses no request, and a spot pool left short spills onto
its fallback: real Triton servers, the gateway as a subprocess.

The spot pool's only endpoint goes away the way discovery reports a reclaimed node (the pool's
endpoint list changes; here by a config reload, which is the same swap of the pool's
endpoints): requests already on it finish there, new ones go to the on-demand fallback pool at
once, and then the spot Triton is killed. Every request gets its 200.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from servegate.local.launch import TritonProcess
from tests.conftest import start_tritons, stop_all
from tests.harness import GatewayProcess, start_gateway, wait_for

pytestmark = pytest.mark.integration

BODY = json.dumps({"inputs": [{"name": "DELAY_MS", "shape": [1, 1], "datatype": "INT32",
                               "data": [30]}]}).encode()


def config(spot: list[TritonProcess], ondemand: TritonProcess,
           spill_at: int | None = None) -> dict[str, Any]:
    def eps(procs: list[TritonProcess]) -> list[dict[str, str]]:
        return [{"http": p.http, "grpc": p.grpc} for p in procs]

    return {
        "pools": {
            "spot": {"endpoints": eps(spot), "fallback_pool": "ondemand",
                     **({"fallback_spill_at": spill_at} if spill_at else {}),
                     "health": {"probe_interval_s": 0.5},
                     "cost": {"capacity": "spot", "price_per_gpu_hour": 4.0,
                              "spot_price_per_gpu_hour": 1.2}},
            "ondemand": {"endpoints": eps([ondemand]), "health": {"probe_interval_s": 0.5},
                         "cost": {"price_per_gpu_hour": 4.0}},
        },
        "models": {"sleeper": {"pool": "spot"}},
        "cost": {"tick_s": 0.25},
    }


@pytest.fixture(scope="module")
def tritons() -> Iterator[list[TritonProcess]]:
    procs = start_tritons(3, models=("sleeper",))
    yield procs
    stop_all(procs)


@pytest.fixture(scope="module")
def gw(tritons: list[TritonProcess], tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[GatewayProcess]:
    proc = start_gateway(config(tritons[:1], tritons[2]), tmp_path_factory.mktemp("spot"))
    yield proc
    proc.stop()


class Load:
    """Client threads sending the sleeper request back to back; every outcome is kept."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results: list[tuple[float, float, int]] = []  # start, end, status (0: no answer)
        self.open: dict[int, float] = {}  # thread -> start of the request it is waiting on
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, i: int) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            with self.lock:
                self.open[i] = start
            try:
                req = urllib.request.Request(self.url, data=BODY, method="POST")
                with urllib.request.urlopen(req, timeout=30) as r:
                    status = r.status
                    r.read()
            except urllib.error.HTTPError as e:
                status = e.code
            except OSError:
                status = 0
            with self.lock:
                del self.open[i]
                self.results.append((start, time.monotonic(), status))

    def started_before_done(self, t: float) -> bool:
        """No request that started before ``t`` is still waiting for its answer."""
        with self.lock:
            return all(start >= t for start in self.open.values())

    def count(self, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for start, _, _ in self.results if start >= since)


def cost_requests(gw: GatewayProcess, pool: str) -> float:
    return gw.metric("servegate_cost_requests_total", pool=pool)


def test_preempted_spot_pool_loses_no_request(gw: GatewayProcess,
                                              tritons: list[TritonProcess]) -> None:
    spot, _, ondemand = tritons
    with Load(gw.url + "/v2/models/sleeper/infer") as load:
        wait_for(lambda: load.count() >= 40, 20, "traffic on the spot pool")
        assert cost_requests(gw, "ondemand") == 0
        # The spot node is reclaimed: discovery drops its endpoint from the pool.
        gw.write_config(config([], ondemand))
        preempted = time.monotonic()
        gw.reload()
        wait_for(lambda: cost_requests(gw, "ondemand") > 0, 10, "requests on the fallback")
        # Requests that were on the spot endpoint finish there; then the node goes away.
        wait_for(lambda: load.started_before_done(preempted), 10, "in-flight requests drained")
        spot.stop()
        after_kill = time.monotonic()
        wait_for(lambda: load.count(after_kill) >= 40, 20, "traffic after the spot node died")
    bad = [r for r in load.results if r[2] != 200]
    assert not bad, f"{len(bad)} of {len(load.results)} requests failed: {bad[:5]}"
    assert len(load.results) >= 100
    # All traffic after the preemption was served (and charged) on the on-demand pool.
    assert cost_requests(gw, "ondemand") >= load.count(after_kill)
    # Some requests were in flight across the preemption (and still got their 200).
    assert any(start < preempted < end for start, end, _ in load.results)
    assert "config generation 2 applied" in gw.log()


@pytest.fixture(scope="module")
def spill_gw(tritons: list[TritonProcess], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[GatewayProcess]:
    """A spot pool left with one endpoint (the second Triton; the first is the one the test
    above preempts) in front of the on-demand one, spilling past 2 outstanding."""
    proc = start_gateway(config(tritons[1:2], tritons[2], spill_at=2),
                         tmp_path_factory.mktemp("spot-spill"))
    yield proc
    proc.stop()


def test_a_short_spot_pool_spills_onto_the_fallback(spill_gw: GatewayProcess) -> None:
    """One spot endpoint left (the other was reclaimed) and six clients: past 2 outstanding
    on it, requests go to the on-demand pool; nothing is lost."""
    with Load(spill_gw.url + "/v2/models/sleeper/infer", threads=6) as load:
        wait_for(lambda: load.count() >= 120, 30, "traffic")
    bad = [r for r in load.results if r[2] != 200]
    assert not bad, f"{len(bad)} of {len(load.results)} requests failed: {bad[:5]}"
    wait_for(lambda: cost_requests(spill_gw, "spot") + cost_requests(spill_gw, "ondemand")
             == len(load.results), 5, "every request accounted")
    spot, ondemand = cost_requests(spill_gw, "spot"), cost_requests(spill_gw, "ondemand")
    assert spot > 0 and ondemand > 0, (spot, ondemand)
