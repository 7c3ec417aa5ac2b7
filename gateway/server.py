"""Wiring and running the gateway process: build the parts, serve, reload, shut down.

Where it sits: the entry behind ``servegate gateway``. :class:`Gateway` composes runtime,
upstream clients, proxy, metrics, control endpoints, the gRPC front and prober from one config
(a factory, no module-level app); :func:`serve` runs it under uvicorn (httptools, uvloop) and,
unless ``grpc_port`` is 0, a grpc.aio server beside it, and owns the background tasks. SIGHUP
reloads the config. As one of the workers of ``--workers N`` (``settings.worker`` set, started by
:mod:`gateway.workers.parent`) it binds its listeners with SO_REUSEPORT beside its siblings and
answers ``/metrics`` for the whole pod.

SIGTERM/SIGINT drain, then exit 0:

1. at once: readiness false (REST ``/v2/health/ready`` and gRPC ``ServerReady``); every REST
   response from now on says ``connection: close``, so keep-alive clients stop reusing
   connections that are about to close; requests held for a cold start may wait until just
   before the deadline (``shutdown_delay_s + graceful_shutdown_s`` away), no longer;
2. after ``shutdown_delay_s`` (0 by default; time for Kubernetes to drop the pod from its
   endpoints) the listeners close, so new connections are refused; a request already on its way
   over an idle keep-alive connection is still read and served (a short linger), then idle
   connections close; the gRPC server stops taking calls and lets running ones finish;
3. in-flight requests (REST and gRPC, streams included) finish; the ones still held for a cold
   start when the deadline nears get 503 + Retry-After, never a dropped connection; whatever is
   still running at the deadline is cancelled. A second signal skips what is left of step 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator

import grpc
import prometheus_client
import uvicorn

from adapters.configfile import load_config_file
from contracts import Config, ConfigError
from gateway.adapters.activation import Activator
from gateway.adapters.residency_store import MemoryResidencyStore, RedisResidencyStore
from gateway.adapters.state import MemoryStore, RedisStore, StateStore
from gateway.adapters.upstream import NativeUpstream, Upstream
from gateway.config import Reloader
from gateway.errors import StateStoreError
from gateway.grpc import GrpcChannels, GrpcFront, build_server
from gateway.http.admin import create_admin_app
from gateway.http.app import GatewayApp
from gateway.http.control import Control
from gateway.http.protocol import Draining, v2_protocol
from gateway.jobs.discovery import Discovery, check_supported
from gateway.jobs.prober import Prober
from gateway.jobs.publisher import Publisher
from gateway.jobs.supervisor import Supervisor
from gateway.metrics import GatewayMetrics
from gateway.pipeline.admission import Admission
from gateway.pipeline.auth import KeyRing, KeysError, load_keys
from gateway.pipeline.coldstart import ColdStart
from gateway.pipeline.cost import CostMeter
from gateway.pipeline.load import Load
from gateway.pipeline.proxy import Proxy
from gateway.pipeline.quota import Quotas
from gateway.pipeline.residency import Residency
from gateway.pipeline.runtime import Runtime
from gateway.pipeline.service import Pipeline
from gateway.settings import GatewaySettings, ServerSettings
from gateway.tracing import Tracing
from gateway.traffic.manager import TrafficManager
from gateway.traffic.shadow import ShadowMirror
from gateway.traffic.sync import TrafficSync
from gateway.workers import WORKER_READY
from gateway.workers.podmetrics import PodMetrics

log = logging.getLogger("servegate.gateway")


def pools_without_grpc(config: Config) -> list[str]:
    """Pools whose configured endpoints give the gRPC front nothing to call: none lists a
    ``grpc`` address. Discovered pools are left out (their addresses come at run time)."""
    return sorted(name for name, pool in config.pools.items()
                  if pool.discovery.type == "static" and pool.endpoints
                  and not any(ep.grpc for ep in pool.endpoints))


def warn_missing_grpc(config: Config) -> None:
    for name in pools_without_grpc(config):
        log.warning("pool %s lists no gRPC address (endpoints[].grpc) while the gRPC front "
                    "door is on: gRPC calls to its models will get UNAVAILABLE", name)


class Gateway:
    def __init__(self, config: Config, settings: GatewaySettings,
                 upstream: Upstream | None = None, store: StateStore | None = None) -> None:
        self.runtime = Runtime(config)
        # First: with tracing on but the SDK missing, start-up stops here (TracingUnavailable).
        self.tracing = Tracing(settings.tracing)
        self.grpc_on = settings.server.grpc_port != 0
        if self.grpc_on:
            warn_missing_grpc(config)
        # Leaves first: every part gets what it uses as constructor arguments.
        self.upstream: Upstream = upstream or NativeUpstream()
        self.load = Load()
        self.metrics = GatewayMetrics(self.runtime, self.load.in_flight_now,
                                      queued=self.load.queued)
        self.quotas = Quotas(_replica_id(settings), settings.redis_url)
        self.cost = CostMeter(self.runtime, self.metrics.registry,
                              replicas=lambda: self.quotas.replicas)
        self.activator = Activator(self.upstream, settings.autoscaler_url, settings.redis_url)
        self.coldstart = ColdStart(self.runtime, self.metrics, self.activator, load=self.load)
        self.residency = _residency(self.runtime, self.upstream, self.coldstart, self.metrics,
                                    self.load, settings)
        self.proxy = Proxy(self.runtime, self.upstream, self.metrics, load=self.load,
                           coldstart=self.coldstart, cost=self.cost, residency=self.residency)
        self.discovery = Discovery(self.runtime, self.upstream, self.coldstart.notify)
        self.ready = False
        self.jobs = Supervisor()
        self.mirror = ShadowMirror(self.metrics)
        self.store: StateStore = store or MemoryStore()
        self.traffic = TrafficManager(self.runtime, self.store, self.mirror,
                                      tick_s=settings.traffic_tick_s, resync_s=settings.resync_s)
        # A worker of ``--workers N``: /metrics answers for the whole pod.
        self.pod = PodMetrics(self.metrics, settings.worker) if settings.worker else None
        self.control = Control(self.runtime, self.upstream, self.metrics, self.is_ready,
                               admin=create_admin_app(self.traffic, settings.admin_token,
                                                      self.cost),
                               pod_metrics=self.pod.render if self.pod else None)
        self.admission = Admission(self.runtime, self.quotas, self.metrics, self.load.queued_in)
        self.keys_path = settings.api_keys_file
        self.pipeline = Pipeline(self.proxy, self.admission, self.metrics, self.traffic,
                                 self.tracing)
        self.app = GatewayApp(self.pipeline, self.upstream, self.metrics, self.control)
        self.prober = Prober(self.runtime, self.upstream, tick_s=settings.probe_tick_s,
                             coldstart=self.coldstart)
        self.grpc_channels = GrpcChannels()
        self.grpc = GrpcFront(self.pipeline, self.grpc_channels, self.metrics, self.is_ready)

    def is_ready(self) -> bool:
        """Serving (not starting, not draining) and every background job running."""
        return self.ready and self.jobs.healthy

    def load_keys(self, config: Config) -> KeyRing:
        """The API keys for ``config`` (read again on every reload); raises
        :class:`ConfigError` when they are unreadable or name a tenant the config lacks."""
        if config.auth is None or not config.auth.enabled:
            return KeyRing()
        source = str(self.keys_path) if self.keys_path else "$SERVEGATE_API_KEYS"
        try:
            keys = load_keys(self.keys_path)
        except KeysError as exc:
            raise ConfigError(source, [("", str(exc))]) from None
        unknown = sorted(keys.tenants() - set(config.tenants))
        if unknown:
            raise ConfigError(source, [("", f"keys for tenants the config does not define: "
                                            f"{unknown}")])
        if not keys:
            log.warning("auth is on but %s holds no keys: every call will be refused", source)
        return keys

    def apply(self, config: Config) -> None:
        keys = self.load_keys(config)  # before anything changes: a bad keys file keeps both
        self.admission.keys = keys
        self.runtime.apply(config)
        self.coldstart.notify_all()
        if self.grpc_on:
            warn_missing_grpc(config)
        self.warm_grpc()

    def warm_grpc(self) -> None:
        """Connect to every configured endpoint gRPC address now, not on its first call."""
        pools = self.runtime.state.pools.values()
        self.grpc_channels.warm(e.grpc for p in pools for e in p.grpc_endpoints if e.grpc)

    def grpc_message_limit(self) -> int:
        """The largest request any route accepts, plus room for the message's own fields."""
        routes = self.runtime.state.table.routes()
        largest = max((r.max_body_bytes for r in routes),
                      default=self.runtime.state.config.limits.max_body_bytes)
        return largest + 64 * 1024

    async def sweep(self, every_s: float = 30.0, grace_s: float = 30.0) -> None:
        """Every ``every_s``, forget endpoints that left every pool (scale-down, discovery,
        reload): their metric series and gRPC channels. An address seen again later starts
        fresh."""
        while True:
            await asyncio.sleep(every_s)
            pools = self.runtime.state.pools.values()
            http = {e.address for p in pools for e in p.endpoints}
            grpc_live = {e.grpc for p in pools for e in p.endpoints if e.grpc}
            self.metrics.forget_endpoints(http)
            await self.grpc_channels.forget(grpc_live, grace_s)

    def reload_result(self, ok: bool) -> None:
        self.metrics.reloads.labels("success" if ok else "failure").inc()


# After the listeners close: a request already sent over an idle keep-alive connection is read
# and served in this time instead of being reset with its connection.
_IDLE_LINGER_S = 0.25


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal capture (:func:`serve` installs handlers) and
    with a drain bounded by ``deadline`` (loop time) instead of a fixed timeout."""

    deadline: float | None = None
    on_started: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def remaining(self, default: float) -> float:
        if self.deadline is None:
            return default
        return max(self.deadline - asyncio.get_running_loop().time(), 0.0)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # new connections are refused from here on
        for sock in sockets or []:
            sock.close()
        log.info("listeners closed; draining %d connection(s)", len(self.server_state.connections))
        await asyncio.sleep(_IDLE_LINGER_S)
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle: closed now; busy: closed after its response
        grace = self.remaining(float(self.config.timeout_graceful_shutdown or 0))
        try:
            await asyncio.wait_for(self._drained(), grace)
        except TimeoutError:
            log.error("grace period over: cancelling %d request(s) still running",
                      len(self.server_state.tasks))
            for task in self.server_state.tasks:
                task.cancel(msg="graceful shutdown period over")

    async def _drained(self) -> None:
        state = self.server_state
        while state.connections or state.tasks:
            await asyncio.sleep(0.05)


async def serve(settings: GatewaySettings) -> None:
    prometheus_client.disable_created_metrics()
    config = load_config_file(settings.config_path)
    gw = Gateway(config, settings, store=_store(settings))
    try:
        gw.admission.keys = gw.load_keys(config)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    check_supported(gw.runtime)
    try:
        await gw.traffic.resync()
    except StateStoreError as exc:
        log.warning("shared state unavailable at start, using the config's weights: %s", exc)
    reloader = Reloader(settings.config_path, gw.apply, gw.reload_result)
    srv = settings.server
    draining = Draining()
    server = _Server(uvicorn.Config(
        gw.app, host=srv.host, port=srv.http_port, lifespan="off",
        # The gateway's own HTTP/1.1 protocol: model calls skip ASGI; V2 errors, deadlines
        http=v2_protocol(gw.app, draining, config.limits.body_timeout_s),
        access_log=False, log_level=srv.log_level, server_header=False, date_header=False,
        proxy_headers=False,  # the hot path does not need X-Forwarded-* rewriting
        timeout_graceful_shutdown=int(srv.graceful_shutdown_s),
    ))
    sockets = [_reuse_port_socket(srv)] if settings.worker is not None else None
    grpc_server = await _start_grpc(gw, settings) if srv.grpc_port else None
    pod = await _join_pod(gw, server, settings)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def close_listeners() -> None:
        server.should_exit = True
        stopping.set()

    def stop() -> None:
        if server.deadline is not None:  # a second signal: no more delay
            close_listeners()
            return
        gw.ready = False
        draining.on = True
        grace, delay = srv.graceful_shutdown_s, srv.shutdown_delay_s
        server.deadline = loop.time() + delay + grace
        # Held requests are answered (503) a little before the deadline cancels what is left.
        gw.coldstart.drain(max(delay + grace - min(1.0, 0.2 * grace), 0.0))
        log.info("shutting down: readiness off, listeners close in %gs, then %gs to drain",
                 delay, grace)
        loop.call_later(delay, close_listeners)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    jobs = gw.jobs
    jobs.add("prober", gw.prober.run)
    jobs.add("traffic", TrafficSync(gw.traffic).run)
    jobs.add("discovery", gw.discovery.run)
    jobs.add("quotas", gw.quotas.run)
    jobs.add("sweep", gw.sweep)
    jobs.add("cost", gw.cost.run)
    jobs.add("residency", gw.residency.run)
    if settings.redis_url:  # the autoscaler reads every replica's counters from Redis
        publisher = Publisher(settings.redis_url, _replica_id(settings), gw.metrics, gw.runtime)
        jobs.add("publisher", publisher.run)
    if settings.watch:
        jobs.add("watch", lambda: reloader.watch(settings.watch_interval_s))
    tasks = [asyncio.create_task(jobs.run(), name="jobs")]
    grpc_drain = None
    if grpc_server is not None:  # drains beside uvicorn's own graceful shutdown
        grpc_drain = asyncio.create_task(
            _stop_grpc(grpc_server, stopping, lambda: server.remaining(srv.graceful_shutdown_s)),
            name="grpc-drain")
    try:
        gw.ready = True
        await server.serve(sockets=sockets)
    finally:
        gw.ready = False
        stopping.set()
        if grpc_drain is not None:
            await grpc_drain
        if pod is not None:
            await pod.aclose()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gw.mirror.aclose()
        await gw.activator.aclose()
        await gw.residency.aclose()
        await gw.store.aclose()
        await gw.upstream.aclose()
        await gw.grpc_channels.aclose()
        gw.tracing.shutdown()  # flushes queued spans (blocks up to the exporter's timeout)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if server.deadline is not None:
            took = srv.shutdown_delay_s + srv.graceful_shutdown_s - server.remaining(0.0)
            log.info("stopped %.2fs after the signal", took)


async def _start_grpc(gw: Gateway, settings: GatewaySettings) -> grpc.aio.Server:
    srv = settings.server
    host = f"[{srv.host}]" if ":" in srv.host else srv.host
    gw.warm_grpc()
    grpc_server = build_server(gw.grpc, gw.grpc_message_limit(),
                               reuse_port=settings.worker is not None)
    try:
        grpc_server.add_insecure_port(f"{host}:{srv.grpc_port}")
    except RuntimeError as exc:
        raise SystemExit(f"cannot serve gRPC on {host}:{srv.grpc_port}: {exc} "
                         "(--grpc-port 0 turns the gRPC front door off)") from exc
    await grpc_server.start()
    log.info("gRPC front door on %s:%d", host, srv.grpc_port)
    return grpc_server


async def _stop_grpc(grpc_server: grpc.aio.Server, stopping: asyncio.Event,
                     grace_s: Callable[[], float]) -> None:
    """Once stopping: refuse new calls, let running ones finish within the grace left."""
    await stopping.wait()
    await grpc_server.stop(grace_s())


def _reuse_port_socket(srv: ServerSettings) -> socket.socket:
    """A worker's own REST listener, bound with SO_REUSEPORT beside its siblings' (the kernel
    spreads new connections over them); uvicorn listens on it."""
    family = socket.AF_INET6 if ":" in srv.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((srv.host, srv.http_port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot serve REST on {srv.host}:{srv.http_port}: {exc}") from exc
    return sock


async def _join_pod(gw: Gateway, server: _Server, settings: GatewaySettings) -> PodMetrics | None:
    """As a worker of ``--workers N``: serve this worker's metrics to its siblings, answer
    ``/metrics`` for the pod, say when serving (the parent waits for it). Without Redis each
    worker enforces its share of the quotas, as replicas do while Redis is down."""
    slot = settings.worker
    if slot is None:
        return None
    pod = gw.pod
    assert pod is not None
    await pod.start()
    if not settings.redis_url:
        gw.quotas.replicas = slot.count
    server.on_started = lambda: print(WORKER_READY, flush=True)
    return pod


def _residency(runtime: Runtime, upstream: Upstream, coldstart: ColdStart,
               metrics: GatewayMetrics, load: Load, settings: GatewaySettings) -> Residency:
    """Model-managed pools: holdings, loads on demand, placement (gateway/pipeline/residency.py);
    the repository index shows each managed model's state through it."""
    store = (RedisResidencyStore(settings.redis_url, _replica_id(settings))
             if settings.redis_url else MemoryResidencyStore())
    residency = Residency(runtime, upstream, coldstart, metrics.registry, load.in_flight_now,
                          store)
    runtime.model_state = residency.index_state
    return residency


def _store(settings: GatewaySettings) -> StateStore:
    if not settings.redis_url:
        return MemoryStore()
    return RedisStore(settings.redis_url, _replica_id(settings))


def _replica_id(settings: GatewaySettings) -> str:
    return settings.replica_id or f"{socket.gethostname()}:{os.getpid()}"


def run(settings: GatewaySettings) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
