"""Wiring and running the gateway process: build the parts, serve, reload, shut down.

Where it sits: the entry behind ``servegate gateway``. :class:`Gateway` composes runtime,
upstream clients, proxy, metrics, control endpoints, the gRPC front and prober from one config
(a factory, no module-level app); :func:`serve` runs it under uvicorn (httptools, uvloop) and,
unless ``grpc_port`` is 0, a grpc.aio server beside it, and owns the background tasks. SIGHUP
reloads the config; SIGTERM/SIGINT turn readiness off and let both servers finish in-flight
requests (gRPC streams included) before exiting, each within ``graceful_shutdown_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator

import grpc
import prometheus_client
import uvicorn

from gateway.activation import Activator
from gateway.admin import create_admin_app
from gateway.coldstart import ColdStart
from gateway.config import Reloader, load_config_file
from gateway.discovery import Discovery, check_supported
from gateway.errors import StateStoreError
from gateway.grpc import GrpcChannels, GrpcFront, build_server
from gateway.http.app import GatewayApp
from gateway.http.control import Control
from gateway.metrics import GatewayMetrics
from gateway.prober import Prober
from gateway.proxy import Proxy
from gateway.publisher import Publisher
from gateway.runtime import Runtime
from gateway.settings import GatewaySettings
from gateway.shadow import ShadowMirror
from gateway.state import MemoryStore, RedisStore, StateStore
from gateway.traffic import TrafficManager
from gateway.upstream import NativeUpstream, Upstream
from router import Config

log = logging.getLogger("servegate.gateway")


class Gateway:
    def __init__(self, config: Config, settings: GatewaySettings,
                 upstream: Upstream | None = None, store: StateStore | None = None) -> None:
        self.runtime = Runtime(config)
        self.upstream: Upstream = upstream or NativeUpstream()
        self.proxy = Proxy(self.runtime, self.upstream)
        self.metrics = GatewayMetrics(self.runtime, lambda: self.proxy.in_flight)
        self.proxy.metrics = self.metrics
        self.activator = Activator(self.upstream, settings.autoscaler_url, settings.redis_url)
        self.coldstart = ColdStart(self.runtime, self.metrics, self.activator)
        self.proxy.coldstart = self.coldstart
        self.metrics.queued = self.coldstart.queued
        self.discovery = Discovery(self.runtime, self.upstream, self.coldstart.notify)
        self.ready = False
        self.control = Control(self.runtime, self.upstream, self.metrics, lambda: self.ready)
        self.mirror = ShadowMirror(self.metrics)
        self.store: StateStore = store or MemoryStore()
        self.traffic = TrafficManager(self.runtime, self.store, self.mirror,
                                      tick_s=settings.traffic_tick_s, resync_s=settings.resync_s)
        self.app = GatewayApp(self.proxy, self.metrics, self.control, self.traffic)
        self.prober = Prober(self.runtime, self.upstream, tick_s=settings.probe_tick_s,
                             coldstart=self.coldstart)
        self.grpc_channels = GrpcChannels()
        self.grpc = GrpcFront(self.proxy, self.grpc_channels, self.metrics, lambda: self.ready,
                              self.traffic)

    def apply(self, config: Config) -> None:
        self.runtime.apply(config)
        self.coldstart.notify_all()
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

    def reload_result(self, ok: bool) -> None:
        self.metrics.reloads.labels("success" if ok else "failure").inc()


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal capture: :func:`serve` installs handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: GatewaySettings) -> None:
    prometheus_client.disable_created_metrics()
    config = load_config_file(settings.config_path)
    gw = Gateway(config, settings, store=_store(settings))
    check_supported(gw.runtime)
    gw.control.admin = create_admin_app(gw.traffic, settings.admin_token)
    try:
        await gw.traffic.resync()
    except StateStoreError as exc:
        log.warning("shared state unavailable at start, using the config's weights: %s", exc)
    reloader = Reloader(settings.config_path, gw.apply, gw.reload_result)
    srv = settings.server
    server = _Server(uvicorn.Config(
        gw.app, host=srv.host, port=srv.http_port, http="httptools", lifespan="off",
        access_log=False, log_level=srv.log_level, server_header=False, date_header=False,
        proxy_headers=False,  # the hot path does not need X-Forwarded-* rewriting
        timeout_graceful_shutdown=int(srv.graceful_shutdown_s),
    ))
    grpc_server = await _start_grpc(gw, settings) if srv.grpc_port else None
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop() -> None:
        gw.ready = False
        server.should_exit = True
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    tasks = [asyncio.create_task(gw.prober.run(), name="prober"),
             asyncio.create_task(gw.traffic.run(), name="traffic"),
             asyncio.create_task(gw.discovery.run(), name="discovery")]
    if settings.redis_url:  # the autoscaler reads every replica's counters from Redis
        publisher = Publisher(settings.redis_url, _replica_id(settings), gw.metrics, gw.runtime)
        tasks.append(asyncio.create_task(publisher.run(), name="publisher"))
    if settings.watch:
        tasks.append(asyncio.create_task(reloader.watch(settings.watch_interval_s), name="watch"))
    grpc_drain = None
    if grpc_server is not None:  # drains beside uvicorn's own graceful shutdown
        grpc_drain = asyncio.create_task(
            _stop_grpc(grpc_server, stopping, srv.graceful_shutdown_s), name="grpc-drain")
    try:
        gw.ready = True
        await server.serve()
    finally:
        gw.ready = False
        stopping.set()
        if grpc_drain is not None:
            await grpc_drain
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gw.mirror.aclose()
        await gw.activator.aclose()
        await gw.store.aclose()
        await gw.upstream.aclose()
        await gw.grpc_channels.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _start_grpc(gw: Gateway, settings: GatewaySettings) -> grpc.aio.Server:
    srv = settings.server
    host = f"[{srv.host}]" if ":" in srv.host else srv.host
    gw.warm_grpc()
    grpc_server = build_server(gw.grpc, gw.grpc_message_limit())
    try:
        grpc_server.add_insecure_port(f"{host}:{srv.grpc_port}")
    except RuntimeError as exc:
        raise SystemExit(f"cannot serve gRPC on {host}:{srv.grpc_port}: {exc} "
                         "(--grpc-port 0 turns the gRPC front door off)") from exc
    await grpc_server.start()
    log.info("gRPC front door on %s:%d", host, srv.grpc_port)
    return grpc_server


async def _stop_grpc(grpc_server: grpc.aio.Server, stopping: asyncio.Event,
                     grace_s: float) -> None:
    await stopping.wait()
    await grpc_server.stop(grace_s)


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
