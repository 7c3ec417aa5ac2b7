"""``servegate autoscaler``: wire collector, policy and actuator, serve status, run the loop.

Where it sits: the autoscaler process's entry (the sidecar or standalone controller). The
command line becomes :class:`AutoscalerSettings` once (:mod:`autoscaler.cli`); the YAML file
is read once at start. :class:`Autoscaler` builds everything inside one
:class:`contextlib.AsyncExitStack` (HTTP client, actuator and its replicas, status server,
KEDA server, Kubernetes client) and :meth:`Autoscaler.run` runs every long-lived task -
the control loop, leader election, the Redis activation subscriber - in one
:class:`asyncio.TaskGroup` until ``stop`` is set (SIGTERM / SIGINT in :func:`run`). Leaving
releases the lease, stops local replicas and closes the servers: no orphans.

Actuators (``--actuator``): ``local`` Triton processes (demo, tests), ``kubernetes`` the
Deployments' scale subresource (with Lease leader election unless ``--no-leader-elect``),
``keda`` KEDA's external scaler on ``--keda-port``, ``hpa`` metrics for an HPA, ``none``
decide and publish only (the default: a dry run never changes anything).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from adapters.configfile import load_config_file
from autoscaler.actuators.base import Actuator, ExportedActuator, TeeActuator
from autoscaler.collector import Collector, GpuSource, ScrapedGateways, TritonSource
from autoscaler.errors import AutoscalerError, KubernetesError, SetupError
from autoscaler.loop import Controller, RealTicker, Ticker
from autoscaler.metrics import AutoscalerMetrics
from autoscaler.policy import ScalerSpec
from autoscaler.settings import pool_specs, split_variants
from autoscaler.signals.gateway import PoolMap
from autoscaler.signals.triton import metrics_endpoints
from autoscaler.status import EndpointSource, StatusServer, create_app
from contracts import Config, ConfigError

log = logging.getLogger(__name__)

ACTUATORS = ("local", "kubernetes", "keda", "hpa", "none")


@dataclass(frozen=True)
class KubeSettings:
    api_url: str | None = None  # else kubeconfig, else in-cluster
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None  # the Deployments' default namespace
    leader_elect: bool = True
    lease_name: str = "servegate-autoscaler"
    lease_namespace: str | None = None  # default: namespace
    lease_duration_s: int = 15
    lease_renew_s: float = 2.0
    identity: str = ""  # default: hostname-pid
    timeout_s: float = 5.0


@dataclass(frozen=True)
class AutoscalerSettings:
    config_path: Path
    actuator: str = "none"
    host: str = "0.0.0.0"
    status_port: int = 9096
    keda_port: int = 9095
    # With another actuator: also serve KEDA's external scaler, reporting the same decisions.
    serve_keda: bool = False
    gateways: tuple[str, ...] = ()  # in addition to autoscaling.signals.gateways
    redis_url: str | None = None  # activations; default: autoscaling.signals.redis_url
    kube: KubeSettings = field(default_factory=KubeSettings)


class _Stopped(Exception):
    """Raised inside the task group to end it when ``stop`` is set."""


def _identity(kube: KubeSettings) -> str:
    return kube.identity or f"{socket.gethostname()}-{os.getpid()}"


class Autoscaler:
    """Everything one autoscaler process runs; ``async with`` builds it, :meth:`run` runs it."""

    def __init__(self, settings: AutoscalerSettings, *, config: Config | None = None,
                 clock: Callable[[], float] = time.time, ticker: Ticker | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        if settings.actuator not in ACTUATORS:
            raise SetupError(f"unknown actuator {settings.actuator!r}; one of {ACTUATORS}")
        self.settings = settings
        self.config = config or load_config_file(settings.config_path)
        if self.config.autoscaling is None or not self.config.autoscaling.pools:
            raise SetupError(f"{settings.config_path}: no 'autoscaling.pools' to scale")
        self.auto = self.config.autoscaling
        self.specs: dict[str, ScalerSpec] = pool_specs(self.config)
        self.clock = clock
        self.ticker = ticker or RealTicker()
        self.environ = os.environ if environ is None else environ
        self.metrics = AutoscalerMetrics()
        self._stack = AsyncExitStack()
        self._tasks: list[Callable[[], Any]] = []
        self.actuator: Actuator | None = None
        self.endpoints: EndpointSource | None = None
        self.elector: Any = None
        self.controller: Controller | None = None
        self.status_port = 0
        self.keda_port = 0

    # ---------------------------------------------------------------- building

    async def __aenter__(self) -> Autoscaler:
        try:
            await self._build()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._stack.aclose()

    async def _build(self) -> None:
        http = await self._stack.enter_async_context(httpx.AsyncClient())
        self.actuator = await self._actuator()
        leader = None if self.elector is None else self.elector.is_leader
        self.controller = Controller(
            self.specs, self._collector(http), self.actuator, clock=self.clock,
            ticker=self.ticker, tick_s=self.auto.controller.tick_s,
            scrape_s=self.auto.signals.scrape_interval_s, history=self.auto.controller.history,
            leader=leader, metrics=self.metrics, splits=split_variants(self.config))
        app = create_app(self.controller, self.settings.actuator, self.endpoints)
        try:
            status = await self._stack.enter_async_context(
                StatusServer(app, self.settings.host, self.settings.status_port))
        except OSError as exc:
            raise SetupError(f"cannot serve status on {self.settings.host}:"
                             f"{self.settings.status_port}: {exc}") from exc
        self.status_port = status.port

    def _collector(self, http: httpx.AsyncClient) -> Collector:
        signals = self.auto.signals
        gateway: Any = None
        if signals.redis_url:
            from adapters.redisio import close, connect
            from autoscaler.signals.redis_stats import RedisStatsReader

            client = connect(signals.redis_url, timeout_s=signals.scrape_timeout_s)
            self._stack.push_async_callback(close, client)
            gateway = RedisStatsReader(client, signals.redis_prefix, signals.stale_after_s)
        else:
            urls = [*signals.gateways, *self.settings.gateways]
            if urls:
                gateway = ScrapedGateways(urls, PoolMap.from_config(self.config), http,
                                          signals.scrape_timeout_s)
        return Collector(
            self.specs, gateway, triton=self._triton(http), gpu=self._gpu(http),
            stale_after_s=signals.stale_after_s, p99_window_s=signals.p99_window_s,
            activation_hold_s={p: c.activation_hold_s for p, c in self.auto.pools.items()})

    def _local_endpoints(self) -> dict[str, tuple[str, str]]:
        """The local replicas' Triton metrics addresses (for the Triton signals)."""
        local: Any = self.endpoints
        return {ep.metrics: (pool, ep.http) for pool in self.specs
                for ep in local.endpoints(pool)[1]}

    def _triton(self, http: httpx.AsyncClient) -> TritonSource:
        static = {m: v for m, v in metrics_endpoints(self.config).items() if v[0] in self.specs}
        models = {pool: [m for m, r in self.config.models.items() if r.pool == pool]
                  for pool, spec in self.specs.items() if spec.targets.batch_fill is not None}
        dynamic = self._local_endpoints if self.endpoints is not None else None
        return TritonSource(http, self.auto.signals.scrape_timeout_s, static, dynamic, models)

    def _gpu(self, http: httpx.AsyncClient) -> GpuSource | None:
        from autoscaler.signals import gpu

        signals, timeout = self.auto.signals, self.auto.signals.scrape_timeout_s
        if signals.dcgm_url:
            url = signals.dcgm_url
            return lambda now: gpu.scrape_dcgm(http, url, timeout)
        if signals.prometheus is not None:
            prom = signals.prometheus
            return lambda now: gpu.query_prometheus(http, prom.url, prom.query, timeout)
        if signals.nvml:
            async def nvml(now: float) -> Any:
                return await asyncio.to_thread(gpu.nvml_utilization)
            return nvml
        return None

    async def _actuator(self) -> Actuator:
        primary = await self._primary_actuator()
        if self.settings.serve_keda and self.settings.actuator != "keda":
            minimums = {pool: spec.min_replicas for pool, spec in self.specs.items()}
            return TeeActuator(primary, await self._keda(minimums))
        return primary

    async def _primary_actuator(self) -> Actuator:
        kind = self.settings.actuator
        minimums = {pool: spec.min_replicas for pool, spec in self.specs.items()}
        if kind == "local":
            from autoscaler.actuators.local import LocalActuator

            local = await self._stack.enter_async_context(LocalActuator(
                {pool: cfg.local for pool, cfg in self.auto.pools.items()}, cwd=os.getcwd()))
            self.endpoints = local
            return local
        if kind == "kubernetes":
            return await self._kubernetes()
        if kind == "keda":
            return await self._keda(minimums)
        if kind == "hpa":
            from autoscaler.actuators.hpa import HpaActuator

            return HpaActuator(minimums)
        return ExportedActuator(minimums)

    async def _keda(self, minimums: dict[str, int]) -> Actuator:
        from autoscaler.keda.server import KedaActuator, KedaServer

        keda = KedaActuator(minimums, {p: c.keda.metric_target
                                       for p, c in self.auto.pools.items()})
        try:
            server = KedaServer(keda, self.settings.host, self.settings.keda_port)
        except (OSError, RuntimeError) as exc:
            raise SetupError(f"cannot serve KEDA's external scaler on "
                             f"{self.settings.host}:{self.settings.keda_port}: {exc}") from exc
        await self._stack.enter_async_context(server)
        self.keda_port = server.port
        return keda

    async def _kubernetes(self) -> Actuator:
        from adapters.kube import KubeClient, KubeConnection, KubeTimeouts, in_cluster_namespace
        from autoscaler.actuators.kubernetes import DeploymentRef, ScaleActuator
        from autoscaler.actuators.lease import LeaderElector, LeaseSettings

        kube = self.settings.kube
        try:
            conn = KubeConnection.load(kube.kubeconfig, kube.context, kube.api_url,
                                       KubeTimeouts(kube.timeout_s, kube.timeout_s))
        except KubernetesError as exc:
            raise SetupError(f"no Kubernetes API to talk to: {exc}") from exc
        identity = _identity(kube)
        conn = replace(conn, user_agent=f"servegate-autoscaler/{identity}")
        client = KubeClient(conn)
        self._stack.push_async_callback(client.aclose)
        namespace = kube.namespace or in_cluster_namespace() or "default"
        targets = {pool: DeploymentRef(cfg.kubernetes.namespace or namespace,
                                       cfg.kubernetes.deployment or pool)
                   for pool, cfg in self.auto.pools.items()}
        if kube.leader_elect:
            self.elector = LeaderElector(client, LeaseSettings(
                kube.lease_namespace or namespace, kube.lease_name, kube.lease_duration_s,
                kube.lease_renew_s, kube.lease_duration_s * 2 / 3), identity, self.clock)
        return ScaleActuator(client, targets)

    # ---------------------------------------------------------------- running

    async def run(self, stop: asyncio.Event, release_lease: bool = True) -> None:
        """Run every task until ``stop`` is set (or one of them fails)."""
        assert self.controller is not None
        redis_url = self.settings.redis_url or self.auto.signals.redis_url
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.controller.run(), name="controller")
                if self.elector is not None:
                    tg.create_task(self.elector.run(self.ticker, release_lease), name="lease")
                if redis_url:
                    from autoscaler.activation import subscribe_activations

                    tg.create_task(subscribe_activations(redis_url, self.controller.activate),
                                   name="activations")
                tg.create_task(_until(stop), name="stop")
        except* _Stopped:
            pass


async def _until(stop: asyncio.Event) -> None:
    await stop.wait()
    raise _Stopped


async def serve(settings: AutoscalerSettings, stop: asyncio.Event) -> None:
    async with Autoscaler(settings) as autoscaler:
        print(f"servegate autoscaler: actuator {settings.actuator}, pools "
              f"{', '.join(autoscaler.specs)}; status on "
              f"http://{settings.host}:{autoscaler.status_port}/status"
              + (f"; KEDA external scaler on :{autoscaler.keda_port}"
                 if autoscaler.keda_port else ""), flush=True)
        await autoscaler.run(stop)


def run(settings: AutoscalerSettings) -> int:
    """Run until SIGTERM / SIGINT; returns the exit code (2: cannot start as configured)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve(settings, stop)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a scrape per source per second
    try:
        asyncio.run(main())
    except (SetupError, ConfigError) as exc:
        print(f"servegate autoscaler: {exc}", file=sys.stderr)
        return 2
    except AutoscalerError as exc:
        print(f"servegate autoscaler: {exc}", file=sys.stderr)
        return 1
    return 0
