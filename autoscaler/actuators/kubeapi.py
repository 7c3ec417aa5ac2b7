"""The Kubernetes API adapter: a few REST calls over one shared httpx client.

Where it sits: under the scale actuator (:mod:`.kubernetes`) and leader election
(:mod:`.lease`). The calls are few and off the data path (a GET and maybe a PATCH per pool
per tick, a Lease renewal every few seconds), so a plain async HTTP client is enough:
``kubernetes_asyncio`` is not needed, and the sync ``kubernetes`` client is used only to read
a kubeconfig at startup (:meth:`KubeConnection.from_kubeconfig`).

:func:`kube_errors` is the one place that turns httpx errors and API status codes into the
:class:`~autoscaler.errors.KubernetesError` tree (most specific first, original chained).
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from autoscaler.errors import (
    KubernetesConflict,
    KubernetesError,
    KubernetesForbidden,
    KubernetesNotFound,
    KubernetesUnavailable,
)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class KubeConnection:
    """Where the API server is and how to authenticate; built once at startup."""

    base_url: str
    token: str | None = None
    token_file: Path | None = None  # re-read every minute: bound tokens rotate
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    timeout_s: float = 5.0
    user_agent: str = "servegate-autoscaler"

    @staticmethod
    def in_cluster(environ: Mapping[str, str], timeout_s: float = 5.0) -> KubeConnection:
        host = environ.get("KUBERNETES_SERVICE_HOST")
        port = environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubernetesError("in-cluster config", "KUBERNETES_SERVICE_HOST is not set")
        host = f"[{host}]" if ":" in host else host
        return KubeConnection(f"https://{host}:{port}", token_file=SERVICE_ACCOUNT / "token",
                              ca_file=str(SERVICE_ACCOUNT / "ca.crt"), timeout_s=timeout_s)

    @staticmethod
    def from_kubeconfig(path: str | None = None, context: str | None = None,
                        timeout_s: float = 5.0) -> KubeConnection:
        """Read a kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``) with the kubernetes
        package's loader (exec plugins, client certificates and all)."""
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config

        cfg = k8s_client.Configuration()
        try:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, context=context, client_configuration=cfg)
        except Exception as exc:  # the loader raises ConfigException, OSError, ValueError...
            raise KubernetesError("kubeconfig", str(exc)) from exc
        auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        token = auth.split(" ", 1)[1] if auth and " " in auth else auth
        return KubeConnection(cfg.host, token=token, ca_file=cfg.ssl_ca_cert,
                              cert_file=cfg.cert_file, key_file=cfg.key_file,
                              verify=bool(cfg.verify_ssl), timeout_s=timeout_s)


def in_cluster_namespace() -> str | None:
    try:
        return (SERVICE_ACCOUNT / "namespace").read_text().strip() or None
    except OSError:
        return None


class _BearerFile(httpx.Auth):
    """``Authorization: Bearer`` from a token file, re-read when older than ``every_s``."""

    def __init__(self, path: Path, every_s: float = 60.0) -> None:
        self.path = path
        self.every_s = every_s
        self._token = ""
        self._read_at = -every_s

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if time.monotonic() - self._read_at >= self.every_s:
            try:
                self._token = self.path.read_text().strip()
                self._read_at = time.monotonic()
            except OSError:
                pass  # keep the last token; the API server will say if it is no good
        if self._token:
            request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


def _verify(conn: KubeConnection) -> ssl.SSLContext | bool:
    if not conn.verify:
        return False
    ctx = ssl.create_default_context(cafile=conn.ca_file)
    if conn.cert_file:
        ctx.load_cert_chain(conn.cert_file, conn.key_file)
    return ctx


def _status_error(what: str, response: httpx.Response) -> KubernetesError:
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    code, reason = response.status_code, str(doc.get("reason") or response.reason_phrase)
    message = f"HTTP {code} {reason}: {doc.get('message') or response.text[:200]}"
    if code in (401, 403):
        return KubernetesForbidden(what, message, code, reason)
    if code == 404:
        return KubernetesNotFound(what, message, code, reason)
    if code == 409:
        return KubernetesConflict(what, message, code, reason)
    if code == 429 or code >= 500:
        return KubernetesUnavailable(what, message, code, reason)
    return KubernetesError(what, message, code, reason)


@contextmanager
def kube_errors(what: str) -> Iterator[None]:
    """Translate httpx errors into :class:`KubernetesError` (status errors are raised by
    :meth:`KubeClient.request` from the response)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise KubernetesUnavailable(what, f"timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise KubernetesUnavailable(
            what, f"unreachable: {str(exc) or type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        raise KubernetesError(what, str(exc) or type(exc).__name__) from exc


class KubeClient:
    """GET / POST / merge-PATCH of JSON objects by API path; raises :class:`KubernetesError`."""

    def __init__(self, conn: KubeConnection, client: httpx.AsyncClient | None = None) -> None:
        self.conn = conn
        auth: httpx.Auth | None = None
        headers = {"User-Agent": conn.user_agent, "Accept": "application/json"}
        if conn.token_file is not None:
            auth = _BearerFile(conn.token_file)
        elif conn.token:
            headers["Authorization"] = f"Bearer {conn.token}"
        self._own = client is None
        self.http = client or httpx.AsyncClient(
            base_url=conn.base_url, auth=auth, headers=headers, verify=_verify(conn),
            timeout=httpx.Timeout(conn.timeout_s))

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        what = f"{method} {path}"
        with kube_errors(what):
            if body is None:
                response = await self.http.request(method, path)
            else:
                response = await self.http.request(
                    method, path, json=body, headers={"Content-Type": content_type})
        if response.status_code >= 400:
            raise _status_error(what, response)
        try:
            doc = response.json()
        except ValueError as exc:
            raise KubernetesError(what, "answered with something that is not JSON") from exc
        return doc if isinstance(doc, dict) else {}

    async def get(self, path: str) -> dict[str, Any]:
        return await self.request("GET", path)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, dict(body))

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, dict(body), MERGE_PATCH)


def env_connection(environ: Mapping[str, str] | None = None,
                   kubeconfig: str | None = None, context: str | None = None,
                   api_url: str | None = None, timeout_s: float = 5.0) -> KubeConnection:
    """The connection a command line asks for: an explicit URL, a kubeconfig, or in-cluster
    (when ``KUBERNETES_SERVICE_HOST`` is set), else the default kubeconfig."""
    env = os.environ if environ is None else environ
    if api_url:
        return KubeConnection(api_url.rstrip("/"), timeout_s=timeout_s)
    if kubeconfig is None and env.get("KUBERNETES_SERVICE_HOST"):
        return KubeConnection.in_cluster(env, timeout_s)
    return KubeConnection.from_kubeconfig(kubeconfig, context, timeout_s)
