"""Kubernetes EndpointSlice discovery: a Service's ready pods become a pool's endpoints.

Where it sits: :class:`gateway.discovery.Discovery` runs one :class:`SliceWatch` per pool with
``discovery: {type: kubernetes, service: S, namespace: N}``. The watch lists the Service's
EndpointSlices (label ``kubernetes.io/service-name=S``), then watches from the list's
resourceVersion. After every event it rebuilds the pool's endpoints from ALL of the Service's
slices with :func:`endpoints_from_slices` (pure) and, when they differ from the last ones, hands
them on (``Runtime.set_endpoints``, then the cold-start buffer's wake-up). A watch the server
closes is resumed from the last resourceVersion seen; ``410 Gone`` and any failure re-list after
a short fixed pause, the pool keeping its last known endpoints meanwhile.

:class:`KubeApi` speaks to the API server with httpx (async: cancelling the task closes the
watch), using what the ``kubernetes`` client's standard loaders find: the in-cluster service
account, else the kubeconfig (:func:`load_kube_config`, called only when a kubernetes pool exists).
Library errors become :class:`gateway.errors.DiscoveryError` in one place, :func:`_map_errors`.

RBAC: the gateway's service account needs ``get``, ``list`` and ``watch`` on ``endpointslices``
in API group ``discovery.k8s.io``, in every namespace it watches (a namespaced Role is enough).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from gateway.errors import DiscoveryError
from router import EndpointConfig
from router.config import DiscoveryConfig

log = logging.getLogger("servegate.discovery")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
RETRY_S = 0.5

Slice = Mapping[str, Any]


@dataclass(frozen=True)
class KubeTimeouts:
    connect_s: float = 5.0
    request_s: float = 10.0  # one list call, start to finish
    watch_s: int = 300  # the server ends each watch after this (timeoutSeconds); we resume


DEFAULT_TIMEOUTS = KubeTimeouts()


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


# ---- the API server --------------------------------------------------------------------------

@contextmanager
def _map_errors(what: str) -> Iterator[None]:
    """The one place where httpx and decoding errors become :class:`DiscoveryError`."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise DiscoveryError(f"{what}: timed out ({type(exc).__name__})") from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise DiscoveryError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DiscoveryError(f"{what}: unexpected response: {exc!r}") from exc


def _status(code: int, body: bytes) -> dict[str, Any]:
    """The API's ``Status`` object for a failed call (synthesised when the body is not one)."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {"message": body[:200].decode("utf-8", "replace")}
    return {**doc, "code": code}


class KubeApi:
    """The two calls discovery makes (list and watch EndpointSlices) over one httpx client.

    ``auth`` returns the headers to send, asked before each call in a worker thread (the
    standard loaders may re-read a rotated token file or run a credential plugin).
    """

    def __init__(self, base_url: str, *, auth: Callable[[], Mapping[str, str]] | None = None,
                 verify: ssl.SSLContext | bool = True, proxy: str | None = None,
                 sni_hostname: str | None = None,
                 timeouts: KubeTimeouts = DEFAULT_TIMEOUTS) -> None:
        self.base_url = base_url
        self.timeouts = timeouts
        self._auth = auth
        self._extensions = {"sni_hostname": sni_hostname} if sni_hostname else {}
        # trust_env off: like the kubernetes client, ignore HTTP(S)_PROXY; use only ``proxy``.
        self._client = httpx.AsyncClient(
            base_url=base_url, verify=verify, proxy=proxy, trust_env=False,
            timeout=httpx.Timeout(timeouts.request_s, connect=timeouts.connect_s))

    @classmethod
    def from_configuration(cls, cfg: Any, timeouts: KubeTimeouts = DEFAULT_TIMEOUTS) -> KubeApi:
        """From a loaded ``kubernetes.client.Configuration`` (host, TLS files, token)."""
        verify: ssl.SSLContext | bool = True
        if str(cfg.host).startswith("https"):
            verify = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
            if cfg.cert_file:
                verify.load_cert_chain(cfg.cert_file, cfg.key_file or None)
            if not cfg.verify_ssl:
                verify.check_hostname = False
                verify.verify_mode = ssl.CERT_NONE

        def auth() -> dict[str, str]:
            return {a["key"]: a["value"] for a in cfg.auth_settings().values()
                    if a.get("in") == "header" and a.get("value")}

        return cls(cfg.host, auth=auth, verify=verify, proxy=cfg.proxy or None,
                   sni_hostname=getattr(cfg, "tls_server_name", None) or None, timeouts=timeouts)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def list_slices(self, namespace: str, service: str) -> tuple[list[Slice], str]:
        """The Service's EndpointSlices and the list's resourceVersion."""
        what = f"list endpointslices {namespace}/{service}"
        with _map_errors(what):
            resp = await self._client.get(
                _path(namespace), params={"labelSelector": f"{SERVICE_NAME_LABEL}={service}"},
                headers=await self._headers(), extensions=self._extensions)
            if resp.status_code != 200:
                status = _status(resp.status_code, resp.content)
                raise DiscoveryError(f"{what}: HTTP {status['code']}: {status.get('message')}")
            doc = resp.json()
            return list(doc.get("items") or []), str(doc["metadata"]["resourceVersion"])

    async def watch_slices(self, namespace: str, service: str,
                           resource_version: str) -> AsyncGenerator[tuple[str, dict[str, Any]]]:
        """``(type, object)`` for each watch event until the server ends the watch. A refused
        watch comes as one ``ERROR`` event carrying the ``Status`` (``code`` 410: too old)."""
        params = {"labelSelector": f"{SERVICE_NAME_LABEL}={service}", "watch": "true",
                  "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(self.timeouts.watch_s)}
        t = self.timeouts
        timeout = httpx.Timeout(t.request_s, connect=t.connect_s, read=t.watch_s + 30.0)
        with _map_errors(f"watch endpointslices {namespace}/{service}"):
            async with self._client.stream("GET", _path(namespace), params=params,
                                           headers=await self._headers(), timeout=timeout,
                                           extensions=self._extensions) as resp:
                if resp.status_code != 200:
                    yield "ERROR", _status(resp.status_code, await resp.aread())
                    return
                async for line in resp.aiter_lines():
                    if line.strip():
                        event = json.loads(line)
                        yield str(event["type"]), dict(event["object"])

    async def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._auth is not None:
            try:
                headers.update(await asyncio.to_thread(self._auth))
            except Exception as exc:  # whatever the loader's refresh raises (files, plugins)
                raise DiscoveryError(f"Kubernetes API credentials: {exc}") from exc
        return headers


def _path(namespace: str) -> str:
    return f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


def load_kube_config() -> Any:
    """The ``kubernetes.client.Configuration`` the standard loaders find: the in-cluster service
    account, else the kubeconfig (``$KUBECONFIG``, ``~/.kube/config``). Blocking (files, maybe
    a credential plugin): call it off the event loop once serving."""
    # Imported here: heavy, and only pools with kubernetes discovery need it.
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, ValueError) as exc:
        raise DiscoveryError(f"no usable Kubernetes API configuration: {exc}") from exc
    return cfg


def load_kube_api(timeouts: KubeTimeouts = DEFAULT_TIMEOUTS) -> KubeApi:
    """:class:`KubeApi` over :func:`load_kube_config`; blocking, like it."""
    cfg = load_kube_config()
    try:
        return KubeApi.from_configuration(cfg, timeouts)
    except OSError as exc:  # the CA or client certificate files (ssl.SSLError is an OSError)
        raise DiscoveryError(f"Kubernetes API TLS configuration: {exc}") from exc


# ---- one pool's watch ------------------------------------------------------------------------

class SliceWatch:
    """Follows one Service's EndpointSlices; ``publish`` gets each new endpoint list (the first
    list always, then only changes)."""

    def __init__(self, api: KubeApi, spec: DiscoveryConfig,
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
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        log.info("pool %s: watch version too old, re-listing", self.name)
                        return None
                    raise DiscoveryError(f"watch error {obj.get('code')}: {obj.get('message')}")
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
