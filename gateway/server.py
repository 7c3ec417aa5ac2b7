"""Wiring and running the gateway process: build the parts, serve, reload, shut down.

Where it sits: the entry behind ``servegate gateway``. :class:`Gateway` composes runtime,
upstream client, proxy, metrics, control endpoints and prober from one config (a factory, no
module-level app); :func:`serve` runs it under uvicorn (httptools, uvloop) and owns the
background tasks. SIGHUP reloads the config; SIGTERM/SIGINT turn readiness off and let uvicorn
finish in-flight requests before exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import prometheus_client
import uvicorn

from gateway.config import Reloader, load_config_file
from gateway.http.app import GatewayApp
from gateway.http.control import Control
from gateway.metrics import GatewayMetrics
from gateway.prober import Prober
from gateway.proxy import Proxy
from gateway.runtime import Runtime
from gateway.settings import GatewaySettings
from gateway.upstream import NativeUpstream, Upstream
from router import Config

log = logging.getLogger("servegate.gateway")


class Gateway:
    def __init__(self, config: Config, upstream: Upstream | None = None,
                 probe_tick_s: float = 0.25) -> None:
        self.runtime = Runtime(config)
        self.upstream: Upstream = upstream or NativeUpstream()
        self.proxy = Proxy(self.runtime, self.upstream)
        self.metrics = GatewayMetrics(self.runtime, lambda: self.proxy.in_flight)
        self.proxy.metrics = self.metrics
        self.ready = False
        self.control = Control(self.runtime, self.upstream, self.metrics, lambda: self.ready)
        self.app = GatewayApp(self.proxy, self.metrics, self.control)
        self.prober = Prober(self.runtime, self.upstream, tick_s=probe_tick_s)

    def apply(self, config: Config) -> None:
        self.runtime.apply(config)

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
    gw = Gateway(config, probe_tick_s=settings.probe_tick_s)
    reloader = Reloader(settings.config_path, gw.apply, gw.reload_result)
    srv = settings.server
    server = _Server(uvicorn.Config(
        gw.app, host=srv.host, port=srv.http_port, http="httptools", lifespan="off",
        access_log=False, log_level=srv.log_level, server_header=False, date_header=False,
        timeout_graceful_shutdown=int(srv.graceful_shutdown_s),
    ))
    loop = asyncio.get_running_loop()

    def stop() -> None:
        gw.ready = False
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    tasks = [asyncio.create_task(gw.prober.run(), name="prober")]
    if settings.watch:
        tasks.append(asyncio.create_task(reloader.watch(settings.watch_interval_s), name="watch"))
    try:
        gw.ready = True
        await server.serve()
    finally:
        gw.ready = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gw.upstream.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def run(settings: GatewaySettings) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
