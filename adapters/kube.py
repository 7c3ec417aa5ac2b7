"""The one Kubernetes API client: JSON calls and watches over one shared httpx client.

Where it sits: under the gateway's EndpointSlice discovery (``gateway/jobs/discovery_k8s.py``: a
list, then a watch, per pool) and the autoscaler's scale actuator and Lease election
(``autoscaler/actuators/kubernetes.py``, ``lease.py``: a GET and maybe a PATCH per pool per
tick, a Lease renewal every few seconds). All of it is off the data path, so a plain async
HTTP client is enough; the sync ``kubernetes`` package is used only to find and read the
credentials at start-up (:meth:`KubeConnection.load`): the in-cluster service account (whose
bound token it re-reads as it rotates), else a kubeconfig with exec plugins, client
certificates and all.

:func:`kube_errors` and :func:`status_error` are the one place where httpx errors and API
status codes become the :class:`adapters.errors.KubernetesError` tree (original chained).
Cancelling a call or a watch closes its connection.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from adapters.errors import (
    KubernetesConflict,
    KubernetesError,
    KubernetesForbidden,
    KubernetesGone,
    KubernetesNotFound,
    KubernetesUnavailable,
)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"
Headers = Callable[[], Mapping[str, str]]


@dataclass(frozen=True)
class KubeTimeouts:
    connect_s: float = 5.0
    request_s: float = 10.0  # one call, start to finish
    watch_s: int = 300  # the server ends each watch after this (timeoutSeconds); we resume


@dataclass(frozen=True)
class KubeConnection:
    """Where the API server is and how to authenticate; built once at start-up.

    ``auth`` returns the headers to send; it is asked before each call, in a worker thread
    (a loader may re-read a rotated token file or run a credential plugin).
    """

    base_url: str
    auth: Headers | None = field(default=None, compare=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    proxy: str | None = None
    sni_hostname: str | None = None
    timeouts: KubeTimeouts = KubeTimeouts()
    user_agent: str = "servegate"

    @staticmethod
    def from_configuration(cfg: Any, timeouts: KubeTimeouts = KubeTimeouts()) -> KubeConnection:
        """From a loaded ``kubernetes.client.Configuration`` (host, TLS files, token)."""

        def auth() -> dict[str, str]:
            return {a["key"]: a["value"] for a in cfg.auth_settings().values()
                    if a.get("in") == "header" and a.get("value")}

        return KubeConnection(
            str(cfg.host).rstrip("/"), auth=auth, ca_file=cfg.ssl_ca_cert or None,
            cert_file=cfg.cert_file or None, key_file=cfg.key_file or None,
            verify=bool(cfg.verify_ssl), proxy=cfg.proxy or None,
            sni_hostname=getattr(cfg, "tls_server_name", None) or None, timeouts=timeouts)

    @staticmethod
    def load(kubeconfig: str | None = None, context: str | None = None,
             api_url: str | None = None,
             timeouts: KubeTimeouts = KubeTimeouts()) -> KubeConnection:
        """An explicit API URL (no credentials), else - unless a kubeconfig path is given - the
        in-cluster service account, else the kubeconfig (``$KUBECONFIG``, ``~/.kube/config``).
        Blocking (files, maybe a credential plugin): call it before serving or in a thread."""
        if api_url:
            return KubeConnection(api_url.rstrip("/"), timeouts=timeouts)
        # Imported here: heavy, and only Kubernetes users need it.
        from kubernetes import client, config

        cfg = client.Configuration()
        try:
            try:
                if kubeconfig is not None or context is not None:
                    raise config.ConfigException("a kubeconfig was asked for")
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, context=context, client_configuration=cfg)
        except Exception as exc:  # the loaders raise ConfigException, OSError, ValueError...
            raise KubernetesError("no usable Kubernetes API configuration", str(exc)) from exc
        return KubeConnection.from_configuration(cfg, timeouts)


def in_cluster_namespace() -> str | None:
    try:
        return (SERVICE_ACCOUNT / "namespace").read_text().strip() or None
    except OSError:
        return None


def _verify(conn: KubeConnection) -> ssl.SSLContext | bool:
    if not conn.base_url.startswith("https"):
        return True
    ctx = ssl.create_default_context(cafile=conn.ca_file)
    if conn.cert_file:
        ctx.load_cert_chain(conn.cert_file, conn.key_file)
    if not conn.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def status_error(what: str, code: int, body: bytes, reason: str = "") -> KubernetesError:
    """The error for an API answer with status ``code`` (its body a ``Status``, or not)."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {"message": body[:200].decode("utf-8", "replace")}
    reason = str(doc.get("reason") or reason)
    message = f"HTTP {code}{' ' + reason if reason else ''}: {doc.get('message') or ''}"
    kind = {401: KubernetesForbidden, 403: KubernetesForbidden, 404: KubernetesNotFound,
            409: KubernetesConflict, 410: KubernetesGone}.get(code)
    if kind is None:
        kind = KubernetesUnavailable if code == 429 or code >= 500 else KubernetesError
    return kind(what, message, code, reason)


@contextmanager
def kube_errors(what: str) -> Iterator[None]:
    """Translate httpx and decoding errors into :class:`KubernetesError`."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise KubernetesUnavailable(what, f"timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise KubernetesUnavailable(
            what, f"unreachable: {str(exc) or type(exc).__name__}") from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise KubernetesError(what, f"{type(exc).__name__}: {exc}") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KubernetesError(what, f"unexpected response: {exc!r}") from exc


class KubeClient:
    """GET / POST / merge-PATCH of JSON objects by API path, and watches; every failure is a
    :class:`KubernetesError`."""

    def __init__(self, conn: KubeConnection) -> None:
        self.conn = conn
        t = conn.timeouts
        self._extensions = {"sni_hostname": conn.sni_hostname} if conn.sni_hostname else {}
        # trust_env off: like the kubernetes client, ignore HTTP(S)_PROXY; use only ``proxy``.
        self.http = httpx.AsyncClient(
            base_url=conn.base_url, verify=_verify(conn), proxy=conn.proxy, trust_env=False,
            headers={"User-Agent": conn.user_agent, "Accept": "application/json"},
            timeout=httpx.Timeout(t.request_s, connect=t.connect_s))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json",
                      params: Mapping[str, str] | None = None) -> dict[str, Any]:
        what = f"{method} {path}"
        headers = await self.headers(what)
        if body is not None:
            headers["Content-Type"] = content_type
        with kube_errors(what):
            response = await self.http.request(
                method, path, params=params, headers=headers,
                content=None if body is None else json.dumps(body).encode(),
                extensions=self._extensions)
            if response.status_code >= 400:
                raise status_error(what, response.status_code, response.content,
                                   response.reason_phrase)
            doc = response.json()
        return doc if isinstance(doc, dict) else {}

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, dict(body))

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, dict(body), MERGE_PATCH)

    async def watch(self, path: str, params: Mapping[str, str],
                    resource_version: str) -> AsyncGenerator[tuple[str, dict[str, Any]]]:
        """``(type, object)`` for each watch event until the server ends the watch. A refused
        watch, or an ``ERROR`` event, raises the status's error (410: :class:`KubernetesGone`,
        list again)."""
        what = f"watch {path}"
        t = self.conn.timeouts
        query = {**params, "watch": "true", "resourceVersion": resource_version,
                 "allowWatchBookmarks": "true", "timeoutSeconds": str(t.watch_s)}
        timeout = httpx.Timeout(t.request_s, connect=t.connect_s, read=t.watch_s + 30.0)
        headers = await self.headers(what)
        with kube_errors(what):
            async with self.http.stream("GET", path, params=query, headers=headers,
                                        timeout=timeout, extensions=self._extensions) as resp:
                if resp.status_code != 200:
                    raise status_error(what, resp.status_code, await resp.aread(),
                                       resp.reason_phrase)
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = str(event["type"]), dict(event["object"])
                    if kind == "ERROR":
                        raise status_error(what, int(obj.get("code") or 0),
                                           json.dumps(obj).encode())
                    yield kind, obj

    async def headers(self, what: str = "Kubernetes API credentials") -> dict[str, str]:
        if self.conn.auth is None:
            return {}
        try:
            return dict(await asyncio.to_thread(self.conn.auth))
        except Exception as exc:  # whatever the loader's refresh raises (files, plugins)
            raise KubernetesError(what, f"Kubernetes API credentials: {exc}") from exc
