"""The Kubernetes actuator and Lease leader election against kmock's Kubernetes emulator
(no API server can run here; kmock speaks the REST contract over real HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest

from adapters.kube import KubeClient, KubeConnection, KubeTimeouts
from autoscaler.actuators.kubernetes import DeploymentRef, ScaleActuator
from autoscaler.actuators.lease import LeaderElector, LeaseSettings
from autoscaler.errors import (
    ActuatorError,
    KubernetesForbidden,
    KubernetesNotFound,
    KubernetesUnavailable,
)
from autoscaler.main import Autoscaler, AutoscalerSettings, KubeSettings
from contracts import parse_config

DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
LEASES = kmock.resource("coordination.k8s.io", "v1", "leases")
NS = "serving"


def deployment(name: str, replicas: int, ready: int = 0) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas}, "status": {"readyReplicas": ready}}


def replicas(k: Any, name: str) -> int:
    return int(k.objects[DEPLOYMENTS, NS, name]["spec"]["replicas"])


def scale_patches(k: Any) -> list[Any]:
    return [r for r in list(k) if str(r.method).endswith("PATCH")
            and r.url.path.endswith("/scale")]


@pytest.fixture()
async def client(kmock: Any) -> AsyncIterator[KubeClient]:
    c = KubeClient(KubeConnection(str(kmock.url).rstrip("/")))
    yield c
    await c.aclose()


async def test_scale_reads_then_patches_only_on_change(kmock: Any, client: KubeClient) -> None:
    kmock.objects[DEPLOYMENTS, NS, "triton"] = deployment("triton", 2, ready=1)
    a = ScaleActuator(client, {"cpu": DeploymentRef(NS, "triton")})
    assert await a.current("cpu") == 2
    assert await a.ready("cpu") == 1
    await a.scale("cpu", 2)
    assert scale_patches(kmock) == []
    await a.scale("cpu", 5)
    await a.scale("cpu", 5)
    patches = scale_patches(kmock)
    assert len(patches) == 1 and a.patches == 1
    assert patches[0].data == {"spec": {"replicas": 5}}
    assert patches[0].headers["Content-Type"] == "application/merge-patch+json"
    assert replicas(kmock, "triton") == 5


async def test_errors_name_the_deployment(kmock: Any, client: KubeClient) -> None:
    a = ScaleActuator(client, {"cpu": DeploymentRef(NS, "missing")})
    with pytest.raises(ActuatorError, match=f"deployment {NS}/missing") as info:
        await a.current("cpu")
    assert isinstance(info.value.__cause__, KubernetesNotFound)
    with pytest.raises(ActuatorError, match="no Deployment configured"):
        await a.scale("other", 1)


async def test_forbidden_patch_is_typed(kmock: Any, client: KubeClient) -> None:
    kmock.objects[DEPLOYMENTS, NS, "triton"] = deployment("triton", 1)
    kmock["patch"] << 403
    a = ScaleActuator(client, {"cpu": DeploymentRef(NS, "triton")})
    with pytest.raises(ActuatorError, match="cannot scale to 3") as info:
        await a.scale("cpu", 3)
    assert isinstance(info.value.__cause__, KubernetesForbidden)


async def test_unreachable_api_is_unavailable() -> None:
    from adapters.procs import free_port

    c = KubeClient(KubeConnection(f"http://127.0.0.1:{free_port()}",
                                  timeouts=KubeTimeouts(1.0, 1.0)))
    try:
        with pytest.raises(ActuatorError) as info:
            await ScaleActuator(c, {"cpu": DeploymentRef(NS, "x")}).current("cpu")
        assert isinstance(info.value.__cause__, KubernetesUnavailable)
    finally:
        await c.aclose()


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


async def test_lease_acquire_renew_expire_and_release(kmock: Any, client: KubeClient) -> None:
    clock = Clock()
    settings = LeaseSettings(NS, "sg", duration_s=10, renew_every_s=2, renew_deadline_s=7)
    a = LeaderElector(client, settings, "a", clock)
    b = LeaderElector(client, settings, "b", clock)
    assert await a.try_once()  # no lease yet: created
    assert not await b.try_once()
    lease = kmock.objects[LEASES, NS, "sg"]
    assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseDurationSeconds"] == 10
    for _ in range(10):  # a renews every 2 s: b never takes over
        clock.t += 2
        assert await a.try_once() and not await b.try_once()
        assert a.is_leader() and not b.is_leader()
    clock.t += 8  # a stops renewing ("crashed"): steps down after its renew deadline
    assert not a.is_leader()
    assert not await b.try_once()  # record unchanged for 8 s < 10 s
    clock.t += 3
    assert await b.try_once() and b.is_leader()
    lease = kmock.objects[LEASES, NS, "sg"]
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    assert not await a.try_once()  # a comes back: a follower now
    await b.release()
    assert not b.is_leader()
    assert await a.try_once()  # released: no need to wait out the duration


async def test_two_autoscalers_only_the_leader_acts_and_a_follower_takes_over(
        kmock: Any, tmp_path: Path) -> None:
    kmock.objects[DEPLOYMENTS, NS, "triton-cpu"] = deployment("triton-cpu", 0)
    config = parse_config({
        "pools": {"cpu": {"endpoints": []}}, "models": {"m": {"pool": "cpu"}},
        "autoscaling": {"controller": {"tick_s": 0.2}, "pools": {"cpu": {
            "min_replicas": 2, "targets": {"concurrency_per_replica": 4},
            "kubernetes": {"deployment": "triton-cpu"}}}}})

    def settings(identity: str) -> AutoscalerSettings:
        return AutoscalerSettings(
            tmp_path / "sg.yaml", actuator="kubernetes", host="127.0.0.1", status_port=0,
            kube=KubeSettings(api_url=str(kmock.url), namespace=NS, lease_duration_s=1,
                              lease_renew_s=0.2, identity=identity))

    def agents() -> set[str]:
        return {r.headers["User-Agent"].rsplit("/", 1)[-1] for r in scale_patches(kmock)}

    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    async with Autoscaler(settings("a"), config=config) as a:
        run_a = asyncio.create_task(a.run(stop_a, release_lease=False))
        await _until(lambda: a.elector.is_leader(), "a leads")
        async with Autoscaler(settings("b"), config=config) as b:
            run_b = asyncio.create_task(b.run(stop_b))
            await _until(lambda: replicas(kmock, "triton-cpu") == 2, "a scales to min 2")
            await asyncio.sleep(0.5)  # b runs its loop too
            assert b.controller is not None and b.controller.pools["cpu"].history
            assert not b.elector.is_leader() and agents() == {"a"}

            run_a.cancel()  # "kill" the leader: it does not release the lease
            await asyncio.gather(run_a, return_exceptions=True)
            kmock.objects[DEPLOYMENTS, NS, "triton-cpu"] = deployment("triton-cpu", 0)  # drift
            await _until(lambda: b.elector.is_leader(), "b takes over", timeout=5)
            await _until(lambda: replicas(kmock, "triton-cpu") == 2, "b scales back to 2")
            assert agents() == {"a", "b"}
            stop_b.set()
            await asyncio.wait_for(run_b, 5)
        lease = kmock.objects[LEASES, NS, "servegate-autoscaler"]
        assert not lease["spec"].get("holderIdentity")  # b released it on a clean stop


async def _until(predicate: Any, what: str, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
    assert predicate(), what
