"""Kubernetes EndpointSlice discovery: a Service's ready pods become a pool's endpoints.

Where it sits: :class:`gateway.jobs.discovery.Discovery` runs one :class:`SliceWatch` per pool with
``discovery: {type: kubernetes, service: S, namespace: N}``. The watch lists the Service's
EndpointSlices (label ``kubernetes.io/service-name=S``), then watches from the list's
resourceVersion. After every event it rebuilds the pool's endpoints from ALL of the Service's
slices with :func:`endpoints_from_slices` (pure) and, when they differ from the last ones, hands
them on (``Runtime.set_endpoints``, then the cold-start buffer's wake-up). A watch the server
closes is resumed from the last resourceVersion seen; ``410 Gone`` and any failure re-list after
a short fixed pause, the pool keeping its last known endpoints meanwhile.

:class:`SliceApi` makes its two calls through the Kubernetes adapter shared with the
autoscaler (:mod:`adapters.kube`: one httpx client, the standard credential loaders, called
only when a kubernetes pool exists); the adapter's errors become
:class:`gateway.errors.DiscoveryError` in one place, :func:`_discovery_errors`.

RBAC: the gateway's service account needs ``get``, ``list`` and ``watch`` on ``endpointslices``
in API group ``discovery.k8s.io``, in every namespace it watches (a namespaced Role is enough).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from typing import Any, Literal

from adapters.errors import KubernetesError, KubernetesGone
from adapters.kube import KubeClient, KubeConnection, KubeTimeouts
from contracts import EndpointConfig
from contracts.config import DiscoveryConfig
from gateway.errors import DiscoveryError

log = logging.getLogger("servegate.discovery")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
RETRY_S = 0.5

Slice = Mapping[str, Any]


DEFAULT_TIMEOUTS = KubeTimeouts(connect_s=5.0, request_s=10.0, watch_s=300)


# ---- pure: slices -> endpoints --------------------------------------------------------------

def endpoint_state(conditions: Mapping[str, Any]) -> Literal["ready", "draining"] | None:
    """``ready``: takes new requests. ``draining``: terminating but still serving, a last resort.

    Nil conditions read as the API defines them: ready -> true, serving -> ready,
    terminating -> false. A terminating endpoint is never ``ready`` here, even when its
    ``ready`` is true (a Service with ``publishNotReadyAddresses``).
    """
    ready = conditions.get("ready") is not False
    serving = ready if conditions.get("serving") is None else conditions["serving"] is True
    terminating = conditions.get("terminating") is True
    if ready and not terminating:
        return "ready"
    if terminating and serving:
        return "draining"
    return None


def slice_ports(item: Slice, http_port_name: str, grpc_port_name: str) -> tuple[int | None,
                                                                               int | None]:
    """The slice's HTTP port (by name, else its only port when that one is unnamed) and its
    gRPC port (by name; optional)."""
    ports = [p for p in item.get("ports") or () if p.get("port")]
    by_name = {p.get("name") or "": int(p["port"]) for p in ports}
    http = by_name.get(http_port_name)
    if http is None and len(ports) == 1 and not ports[0].get("name"):
        http = int(ports[0]["port"])
    return http, by_name.get(grpc_port_name)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def endpoints_from_slices(slices: Iterable[Slice], http_port_name: str = "http",
                          grpc_port_name: str = "grpc") -> list[EndpointConfig]:
    """The endpoints a Service's slices give traffic to, sorted by HTTP address.

    All slices count together: the ready endpoints, or, only while none is ready anywhere,
    those still serving as they terminate. Not-ready and terminating-only endpoints, and
    slices without a usable HTTP port, give nothing. An address listed twice counts once.
    """
    chosen: dict[str, dict[str, EndpointConfig]] = {"ready": {}, "draining": {}}
    for item in slices:
        http_port, grpc_port = slice_ports(item, http_port_name, grpc_port_name)
        if http_port is None:
            continue
        for endpoint in item.get("endpoints") or ():
            state = endpoint_state(endpoint.get("conditions") or {})
            addresses = endpoint.get("addresses") or ()
            if state is None or not addresses:
                continue
            host = addresses[0]  # the addresses of one endpoint are interchangeable
            try:
                config = EndpointConfig(http=_hostport(host, http_port),
                                        grpc=_hostport(host, grpc_port) if grpc_port else None)
            except ValueError:
                continue  # not an address we can dial
            chosen[state].setdefault(config.http, config)
    found = chosen["ready"] or chosen["draining"]
    return [found[http] for http in sorted(found)]


# ---- the API server (through the shared adapter) ----------------------------------------------

@contextmanager
def _discovery_errors() -> Iterator[None]:
    """The one place where the Kubernetes adapter's errors become :class:`DiscoveryError`."""
    try:
        yield
    except KubernetesError as exc:
        raise DiscoveryError(str(exc)) from exc


class SliceApi:
    """The two calls discovery makes (list and watch a Service's EndpointSlices) over the
    shared :class:`adapters.kube.KubeClient`."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    @classmethod
    def connect(cls, conn: KubeConnection) -> SliceApi:
        return cls(KubeClient(conn))

    async def aclose(self) -> None:
        await self.client.aclose()

    async def list_slices(self, namespace: str, service: str) -> tuple[list[Slice], str]:
        """The Service's EndpointSlices and the list's resourceVersion."""
        with _discovery_errors():
            doc = await self.client.get(
                _path(namespace), {"labelSelector": f"{SERVICE_NAME_LABEL}={service}"})
            try:
                return list(doc.get("items") or []), str(doc["metadata"]["resourceVersion"])
            except (KeyError, TypeError) as exc:
                raise DiscoveryError(f"list endpointslices {namespace}/{service}: "
                                     f"unexpected response: {exc!r}") from exc

    async def watch_slices(self, namespace: str, service: str,
                           resource_version: str) -> AsyncGenerator[tuple[str, dict[str, Any]]]:
        """``(type, object)`` for each watch event until the server ends the watch; ``None``
        at the end when the watch's version is too old (410: list again)."""
        events = self.client.watch(_path(namespace),
                                   {"labelSelector": f"{SERVICE_NAME_LABEL}={service}"},
                                   resource_version)
        with _discovery_errors():
            async with aclosing(events):
                try:
                    async for event in events:
                        yield event
                except KubernetesGone:
                    yield "GONE", {}


def _path(namespace: str) -> str:
    return f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


def load_kube_connection(timeouts: KubeTimeouts = DEFAULT_TIMEOUTS) -> KubeConnection:
    """What the standard loaders find: the in-cluster service account, else the kubeconfig.
    Blocking (files, maybe a credential plugin): call it off the event loop once serving."""
    with _discovery_errors():
        return KubeConnection.load(timeouts=timeouts)


def load_slice_api(timeouts: KubeTimeouts = DEFAULT_TIMEOUTS) -> SliceApi:
    """:class:`SliceApi` over :func:`load_kube_connection`; blocking, like it."""
    conn = load_kube_connection(timeouts)
    try:
        return SliceApi.connect(conn)
    except OSError as exc:  # the CA or client certificate files (ssl.SSLError is an OSError)
        raise DiscoveryError(f"Kubernetes API TLS configuration: {exc}") from exc


# ---- one pool's watch ------------------------------------------------------------------------

class SliceWatch:
    """Follows one Service's EndpointSlices; ``publish`` gets each new endpoint list (the first
    list always, then only changes)."""

    def __init__(self, api: SliceApi, spec: DiscoveryConfig,
                 publish: Callable[[list[EndpointConfig]], None], *, retry_s: float = RETRY_S,
                 name: str = "") -> None:
        assert spec.service is not None  # the config validates it for kubernetes discovery
        self.api = api
        self.spec = spec
        self.service = spec.service
        self.publish = publish
        self.retry_s = retry_s
        self.name = name or f"{spec.namespace}/{spec.service}"
        self._slices: dict[str, Slice] = {}
        self._published: list[EndpointConfig] | None = None

    async def run(self) -> None:
        """List, then watch, until cancelled; ``410 Gone`` or a failure re-lists after
        ``retry_s`` while the last published endpoints stay in place."""
        while True:
            try:
                version: str | None = await self._list()
                while version is not None:
                    version = await self._watch(version)
            except DiscoveryError as exc:
                log.warning("pool %s: EndpointSlice discovery failed, re-listing: %s",
                            self.name, exc)
            await asyncio.sleep(self.retry_s)

    async def _list(self) -> str:
        items, version = await self.api.list_slices(self.spec.namespace, self.service)
        self._slices = {_name(s): s for s in items if self._ours(s)}
        self._rebuild()
        return version

    async def _watch(self, version: str) -> str | None:
        """Apply events until the watch ends; the version to resume from, or None to re-list."""
        seen = False
        events = self.api.watch_slices(self.spec.namespace, self.service, version)
        async with aclosing(events):
            async for kind, obj in events:
                seen = True
                if kind == "GONE":
                    log.info("pool %s: watch version too old, re-listing", self.name)
                    return None
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind != "BOOKMARK":
                    self._apply(kind, obj)
        if not seen:  # closed at once: do not spin
            await asyncio.sleep(self.retry_s)
        return version

    def _apply(self, kind: str, obj: Slice) -> None:
        name = _name(obj)
        if kind == "DELETED" or not self._ours(obj):
            self._slices.pop(name, None)
        else:  # ADDED, MODIFIED
            self._slices[name] = obj
        self._rebuild()

    def _ours(self, obj: Slice) -> bool:
        # The API filters by the label already; checking again costs nothing and keeps out a
        # slice relabelled away from the Service (or everything a server ignoring labelSelector
        # sends). A slice without a name cannot be tracked.
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        return bool(meta.get("name")) and labels.get(SERVICE_NAME_LABEL) == self.service

    def _rebuild(self) -> None:
        endpoints = endpoints_from_slices(self._slices.values(), self.spec.http_port_name,
                                          self.spec.grpc_port_name)
        if endpoints != self._published:
            self._published = endpoints
            self.publish(endpoints)


def _name(obj: Slice) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")
