"""Kubernetes EndpointSlice discovery: slices -> endpoints (pure, table-driven), then the watch
against kmock's emulated Kubernetes API (list, watch events, 410, dropped connections, auth).

kmock's emulator ignores ``labelSelector`` and ``resourceVersion`` (a watch replays every object
as ADDED, then streams changes), so the client's own label check and its upserts are exercised
too; a 410 and a server error are injected as reactions on the watch request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import kmock as km
import pytest
from kubernetes import client as k8s_client

from adapters.kube import KubeConnection
from contracts import EndpointConfig, parse_config
from contracts.config import DiscoveryConfig
from gateway.adapters.upstream import NativeUpstream
from gateway.errors import DiscoveryError
from gateway.jobs.discovery import Discovery, check_supported
from gateway.jobs.discovery_k8s import (
    SliceApi,
    SliceWatch,
    endpoint_state,
    endpoints_from_slices,
    load_slice_api,
    slice_ports,
)
from gateway.pipeline.runtime import Runtime

NS = "serving"
SVC = "triton"
RESOURCE = "discovery.k8s.io/v1/endpointslices"
PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
WAIT_S = 3.0


def ep(ip: str, **conditions: bool | None) -> dict[str, Any]:
    conds = {"ready": True, **conditions}
    return {"addresses": [ip], "conditions": {k: v for k, v in conds.items() if v is not None}}


def eslice(name: str, *endpoints: dict[str, Any], service: str = SVC,
           ports: tuple[tuple[str, int], ...] = (("http", 8000), ("grpc", 8001)),
           family: str = "IPv4") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": family,
        "endpoints": list(endpoints),
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
    }


def https(*ips: str) -> list[str]:
    return [f"{ip}:8000" for ip in ips]


# ---- pure ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("conditions", "state"), [
    ({}, "ready"),  # nil ready counts as ready
    ({"ready": True}, "ready"),
    ({"ready": True, "serving": True, "terminating": False}, "ready"),
    ({"ready": False}, None),
    ({"ready": False, "serving": False}, None),
    ({"ready": False, "serving": True, "terminating": True}, "draining"),
    ({"ready": False, "serving": False, "terminating": True}, None),  # terminating only
    ({"terminating": True}, "draining"),  # nil ready and serving: serving follows ready
    ({"ready": True, "terminating": True}, "draining"),  # publishNotReadyAddresses
])
def test_endpoint_state(conditions: dict[str, bool], state: str | None) -> None:
    assert endpoint_state(conditions) == state


@pytest.mark.parametrize(("ports", "expected"), [
    ([{"name": "http", "port": 8000}, {"name": "grpc", "port": 8001}], (8000, 8001)),
    ([{"name": "grpc", "port": 8001}, {"name": "http", "port": 8000}], (8000, 8001)),
    ([{"name": "http", "port": 8000}], (8000, None)),
    ([{"port": 8000}], (8000, None)),  # the only port, unnamed
    ([{"name": "", "port": 8000}], (8000, None)),
    ([{"name": "web", "port": 8000}], (None, None)),  # the only port, named otherwise
    ([{"port": 8000}, {"name": "grpc", "port": 8001}], (None, 8001)),
    ([], (None, None)),
    (None, (None, None)),
])
def test_slice_ports(ports: list[dict[str, Any]] | None,
                     expected: tuple[int | None, int | None]) -> None:
    assert slice_ports({"ports": ports}, "http", "grpc") == expected


def test_all_slices_are_merged_sorted_and_deduplicated() -> None:
    slices = [eslice("a", ep("10.0.0.2"), ep("10.0.0.9", ready=False)),
              eslice("b", ep("10.0.0.1"), ep("10.0.0.2")),
              eslice("v6", ep("fd00::1"), family="IPv6")]
    assert endpoints_from_slices(slices) == [
        EndpointConfig(http="10.0.0.1:8000", grpc="10.0.0.1:8001"),
        EndpointConfig(http="10.0.0.2:8000", grpc="10.0.0.2:8001"),
        EndpointConfig(http="[fd00::1]:8000", grpc="[fd00::1]:8001"),
    ]


def test_port_names_come_from_the_config_and_grpc_is_optional() -> None:
    slices = [eslice("a", ep("10.0.0.1"), ports=(("triton-http", 9000),)),
              eslice("b", ep("10.0.0.2"), ports=(("http", 8000),))]  # no triton-http here
    assert endpoints_from_slices(slices, "triton-http", "triton-grpc") == [
        EndpointConfig(http="10.0.0.1:9000")]
    assert endpoints_from_slices([eslice("c", ep("10.0.0.3"), ports=(("", 80),))]) == [
        EndpointConfig(http="10.0.0.3:80")]


def test_draining_endpoints_only_when_nothing_is_ready_anywhere() -> None:
    draining = ep("10.0.0.1", ready=False, serving=True, terminating=True)
    gone = ep("10.0.0.2", ready=False, serving=False, terminating=True)
    assert [e.http for e in endpoints_from_slices(
        [eslice("a", draining, gone), eslice("b", ep("10.0.0.3"))])] == https("10.0.0.3")
    assert [e.http for e in endpoints_from_slices([eslice("a", draining, gone)])] == \
        https("10.0.0.1")
    assert endpoints_from_slices([eslice("a", gone, ep("10.0.0.4", ready=False))]) == []


def test_unusable_slices_and_endpoints_give_nothing() -> None:
    assert endpoints_from_slices([
        eslice("no-http", ep("10.0.0.1"), ports=(("metrics", 8002), ("grpc", 8001))),
        {"metadata": {"name": "empty"}, "endpoints": None, "ports": None},
        eslice("odd", {"addresses": []}, {"conditions": {}}, ep("not an address!")),
    ]) == []


# ---- against the emulated API ----------------------------------------------------------------

@pytest.fixture
async def api(kmock: km.KubernetesEmulator) -> AsyncIterator[SliceApi]:
    kmock.resources[RESOURCE] = km.ResourceInfo(namespaced=True, kind="EndpointSlice")
    kube = SliceApi.connect(KubeConnection(str(kmock.url).rstrip("/")))
    yield kube
    await kube.aclose()


class Pool:
    """A Discovery over one kubernetes pool; every on_change goes into ``changes``."""

    def __init__(self, api: SliceApi, **discovery: Any) -> None:
        self.runtime = Runtime(parse_config({
            "pools": {"p": {"discovery": {"type": "kubernetes", "service": SVC,
                                          "namespace": NS, **discovery}}},
            "models": {"m": {"pool": "p"}},
        }))
        self.changes: asyncio.Queue[str] = asyncio.Queue()
        self.discovery = Discovery(self.runtime, NativeUpstream(), self.changes.put_nowait,
                                   kube_api=lambda: api, kube_retry_s=0.05)
        self.task: asyncio.Task[None] | None = None

    def endpoints(self) -> list[str]:
        return [e.address for e in self.runtime.state.pools["p"].endpoints]

    async def until(self, expected: list[str]) -> None:
        """Wait for the on_change after which the pool has ``expected`` endpoints."""
        async with asyncio.timeout(WAIT_S):
            while True:
                assert await self.changes.get() == "p"
                if self.endpoints() == expected:
                    return


@pytest.fixture
async def pool(api: SliceApi) -> AsyncIterator[Callable[..., Pool]]:
    made: list[Pool] = []

    def start(**discovery: Any) -> Pool:
        p = Pool(api, **discovery)
        p.task = asyncio.create_task(p.discovery.run())
        made.append(p)
        return p

    yield start
    for p in made:
        assert p.task is not None
        p.task.cancel()
        await asyncio.gather(p.task, return_exceptions=True)


async def change(kmock: km.KubernetesEmulator, method: str, path: str,
                 obj: dict[str, Any] | None = None) -> None:
    # A fresh connection each time: one test resets every connection to the server.
    async with httpx.AsyncClient(base_url=str(kmock.url)) as c:
        resp = await c.request(method, path, json=obj)
    assert resp.status_code == 200, resp.text


async def create(kmock: km.KubernetesEmulator, obj: dict[str, Any]) -> None:
    await change(kmock, "POST", PATH, obj)


async def patch(kmock: km.KubernetesEmulator, name: str, obj: dict[str, Any]) -> None:
    await change(kmock, "PATCH", f"{PATH}/{name}", obj)


async def watching(kmock: km.KubernetesEmulator) -> None:
    """Wait until the emulator streams changes to an open watch.

    kmock ignores resourceVersion: a watch replays the objects as they are, then follows its
    event bus, and a change made before that subscription would be lost (a DELETED for good),
    where the real API would send it from the list's version. So tests change things only once
    the watch follows the bus (``_buses`` is kmock's own; no public view of it exists).
    """
    bus = kmock._buses[km.resource(RESOURCE)]
    async with asyncio.timeout(WAIT_S):
        while not bus.consumer_count:
            await asyncio.sleep(0.005)


async def test_initial_list_merges_all_slices_of_the_service(
        kmock: km.KubernetesEmulator, pool: Callable[..., Pool]) -> None:
    await create(kmock, eslice("triton-a", ep("10.0.0.1"), ep("10.0.0.2", ready=False)))
    await create(kmock, eslice("triton-b", ep("10.0.0.3")))
    await create(kmock, eslice("other-a", ep("10.9.9.9"), service="other"))
    p = pool()
    await p.until(https("10.0.0.1", "10.0.0.3"))
    assert p.runtime.state.pools["p"].endpoints[0].grpc == "10.0.0.1:8001"
    listed = next(iter(kmock[km.action.LIST]))
    assert listed.params["labelSelector"] == "kubernetes.io/service-name=triton"


async def test_a_new_ready_endpoint_is_published_and_wakes_waiters(
        kmock: km.KubernetesEmulator, pool: Callable[..., Pool]) -> None:
    p = pool()
    await p.until([])  # no slices yet: the pool is empty, and says so once
    await watching(kmock)
    await create(kmock, eslice("triton-a", ep("10.0.0.1", ready=False)))
    await patch(kmock, "triton-a", {"endpoints": [ep("10.0.0.1"), ep("10.0.0.2")]})
    await p.until(https("10.0.0.1", "10.0.0.2"))
    watch = next(iter(kmock[km.action.WATCH]))
    assert watch.params["resourceVersion"] == "..."  # the list's, as kmock reports it
    assert watch.params["labelSelector"] == "kubernetes.io/service-name=triton"


async def test_terminating_endpoints_leave_traffic_and_drain_only_as_a_last_resort(
        kmock: km.KubernetesEmulator, pool: Callable[..., Pool]) -> None:
    await create(kmock, eslice("triton-a", ep("10.0.0.1"), ep("10.0.0.2")))
    p = pool()
    await p.until(https("10.0.0.1", "10.0.0.2"))
    await watching(kmock)
    draining = {"ready": False, "serving": True, "terminating": True}
    await patch(kmock, "triton-a", {"endpoints": [ep("10.0.0.1"), ep("10.0.0.2", **draining)]})
    await p.until(https("10.0.0.1"))
    await patch(kmock, "triton-a", {"endpoints": [ep("10.0.0.1", **draining),
                                                  ep("10.0.0.2", **draining)]})
    await p.until(https("10.0.0.1", "10.0.0.2"))  # nothing ready: drain as a last resort
    await patch(kmock, "triton-a", {"endpoints": [
        ep("10.0.0.1", ready=False, serving=False, terminating=True),
        ep("10.0.0.2", **draining)]})
    await p.until(https("10.0.0.2"))


async def test_a_deleted_slice_takes_its_endpoints_away(
        kmock: km.KubernetesEmulator, pool: Callable[..., Pool]) -> None:
    await create(kmock, eslice("triton-a", ep("10.0.0.1")))
    await create(kmock, eslice("triton-b", ep("10.0.0.2")))
    p = pool()
    await p.until(https("10.0.0.1", "10.0.0.2"))
    await watching(kmock)
    await change(kmock, "DELETE", f"{PATH}/triton-a")
    await p.until(https("10.0.0.2"))


async def test_a_dropped_watch_connection_relists_and_recovers(
        kmock: km.KubernetesEmulator, pool: Callable[..., Pool]) -> None:
    await create(kmock, eslice("triton-a", ep("10.0.0.1")))
    p = pool()
    await p.until(https("10.0.0.1"))
    await watching(kmock)
    runner = kmock.servers[0].server.runner
    assert runner is not None and runner.server is not None
    for conn in runner.server.connections:  # reset, as when the API server's pod goes away
        assert conn.transport is not None
        conn.transport.abort()
    await create(kmock, eslice("triton-b", ep("10.0.0.2")))
    await p.until(https("10.0.0.1", "10.0.0.2"))
    assert len(kmock[km.action.LIST]) >= 2


GONE = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}


@pytest.mark.parametrize("fail_first_watch", [
    pytest.param(lambda w: w << ({"type": "ERROR", "object": GONE},), id="410-event"),
    pytest.param(lambda w: w << 410 << GONE, id="410-status"),
    pytest.param(lambda w: w << ({"type": "ERROR", "object": {
        "kind": "Status", "code": 500, "message": "etcd is sad"}},), id="500-event"),
])
async def test_a_watch_error_relists(kmock: km.KubernetesEmulator, pool: Callable[..., Pool],
                                     fail_first_watch: Callable[[km.View], object]) -> None:
    fail_first_watch(kmock[km.action.WATCH][:1])  # then the emulator serves the watches
    await create(kmock, eslice("triton-a", ep("10.0.0.1")))
    p = pool()
    await p.until(https("10.0.0.1"))
    await watching(kmock)  # the second watch: the first failed at once
    assert len(kmock[km.action.LIST]) == 2 and len(kmock[km.action.WATCH]) == 2
    await create(kmock, eslice("triton-b", ep("10.0.0.2")))
    await p.until(https("10.0.0.1", "10.0.0.2"))


async def test_a_failed_list_is_retried(
        kmock: km.KubernetesEmulator, api: SliceApi) -> None:
    kmock[km.action.LIST][:2] << 403 << {"kind": "Status", "code": 403, "message": "forbidden"}
    published: list[list[EndpointConfig]] = []
    await create(kmock, eslice("triton-a", ep("10.0.0.1")))
    watch = SliceWatch(api, DiscoveryConfig(type="kubernetes", service=SVC, namespace=NS),
                       published.append, retry_s=0.01)
    with pytest.raises(DiscoveryError, match="HTTP 403 Forbidden: forbidden"):
        await api.list_slices(NS, SVC)
    task = asyncio.create_task(watch.run())
    try:
        async with asyncio.timeout(WAIT_S):
            while not published:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [[e.http for e in eps] for eps in published] == [https("10.0.0.1")]
    assert len(kmock[km.action.LIST]) == 3


async def test_failing_credentials_are_a_discovery_error(api: SliceApi) -> None:
    def auth() -> dict[str, str]:
        raise OSError("token file vanished")

    kube = SliceApi.connect(KubeConnection(api.client.conn.base_url, auth=auth))
    try:
        with pytest.raises(DiscoveryError, match="credentials: token file vanished"):
            await kube.list_slices(NS, SVC)
    finally:
        await kube.aclose()


async def test_port_names_from_the_pool_config(
        kmock: km.KubernetesEmulator, pool: Callable[..., Pool]) -> None:
    await create(kmock, eslice("triton-a", ep("10.0.0.1"),
                               ports=(("triton-http", 9000), ("triton-grpc", 9001))))
    p = pool(http_port_name="triton-http", grpc_port_name="triton-grpc")
    await p.until(["10.0.0.1:9000"])
    assert p.runtime.state.pools["p"].endpoints[0].grpc == "10.0.0.1:9001"


async def test_cancelling_discovery_closes_the_watch(
        kmock: km.KubernetesEmulator, pool: Callable[..., Pool]) -> None:
    await create(kmock, eslice("triton-a", ep("10.0.0.1")))
    p = pool()
    await p.until(https("10.0.0.1"))
    await watching(kmock)
    assert p.task is not None
    p.task.cancel()
    async with asyncio.timeout(1.0):
        await asyncio.gather(p.task, return_exceptions=True)
        bus = kmock._buses[km.resource(RESOURCE)]
        while bus.consumer_count:  # the server sees the watch connection end
            await asyncio.sleep(0.005)
    assert p.task.cancelled()


async def test_configuration_token_and_host_are_used(kmock: km.KubernetesEmulator) -> None:
    kmock.resources[RESOURCE] = km.ResourceInfo(namespaced=True, kind="EndpointSlice")
    cfg = k8s_client.Configuration(host=str(kmock.url).rstrip("/"))
    cfg.api_key["BearerToken"] = "Bearer t0ken"
    kube = SliceApi.connect(KubeConnection.from_configuration(cfg))
    try:
        assert await kube.list_slices(NS, SVC) == ([], "...")
    finally:
        await kube.aclose()
    assert next(iter(kmock[km.action.LIST])).headers["Authorization"] == "Bearer t0ken"


async def test_the_kubeconfig_is_loaded_else_start_up_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.config import kube_config

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "none"))
    runtime = Runtime(parse_config({
        "pools": {"p": {"discovery": {"type": "kubernetes", "service": SVC}}},
        "models": {"m": {"pool": "p"}},
    }))
    with pytest.raises(DiscoveryError, match="pool 'p': no usable Kubernetes API"):
        check_supported(runtime)

    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://10.1.2.3:6443',"
        " insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: abc}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n")
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    check_supported(runtime)
    kube = load_slice_api()
    assert kube.client.conn.base_url == "https://10.1.2.3:6443"
    assert (await kube.client.headers())["authorization"] == "Bearer abc"
    await kube.aclose()
