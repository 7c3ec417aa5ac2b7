"""Warm gRPC channels to the Triton endpoints, and the one place their errors are translated.

Where it sits: the last hop of the gRPC path (front -> proxy picks an endpoint -> here). There
is one long-lived ``grpc.aio`` channel per endpoint gRPC address (``endpoints[].grpc`` in the
config), created on first use or by :meth:`GrpcChannels.warm` at start-up and reload, and kept
connected (no idle timeout). Calls are bytes in, bytes out (no serializers): the request
message is forwarded as it arrived and the response returned as Triton sent it.

Errors (:func:`translate`), the only place ``grpc.aio.AioRpcError`` is looked into:

    UNAVAILABLE "failed to connect to all addresses"  UpstreamConnectError (never sent; retried)
    channel already in TRANSIENT_FAILURE              UpstreamConnectError (not even tried)
    any other UNAVAILABLE (reset, socket closed)      UpstreamBroken (may have been processed)
    DEADLINE_EXCEEDED of the gateway's own read_s     UpstreamTimeout
    anything else, the client's deadline included     UpstreamStatus: passed through as it came

The first three count against the endpoint's health (passive ejection); an UpstreamStatus is
the endpoint's answer and does not.

Keepalive: a ping every 60 s while calls are open, never on an idle connection. Triton's
defaults (``--grpc-keepalive-permit-without-calls=false``, at most 2 pings without data) accept
exactly that; pinging idle connections would earn a GOAWAY ``too_many_pings``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import grpc

from gateway.errors import (
    GatewayError,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamStatus,
    UpstreamTimeout,
)

SERVICE = "inference.GRPCInferenceService"
STREAM_INFER = f"/{SERVICE}/ModelStreamInfer"

Metadata = tuple[tuple[str, str | bytes], ...]

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    # Size limits are the front's business (per route); the hop to Triton carries anything.
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 2),
    # A restarted Triton is found again within seconds, not the default two minutes; the
    # minimum is also the connect timeout of one attempt.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 1_000),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.client_idle_timeout_ms", 2**31 - 1),
    # Pods talk to pods: never through an http(s)_proxy from the environment.
    ("grpc.enable_http_proxy", 0),
    # Each channel owns its connection (no sharing through the process-wide subchannel pool).
    ("grpc.use_local_subchannel_pool", 1),
)

_TRANSIENT_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE


def translate(code: grpc.StatusCode, details: str, endpoint: str,
              clients_deadline: bool) -> GatewayError:
    """The gateway error for an upstream call that ended with ``code`` (see the module doc).

    ``clients_deadline``: the call's timeout was the client's own deadline, so running out of
    it says nothing about the endpoint.
    """
    if code == grpc.StatusCode.UNAVAILABLE:
        if "failed to connect to all addresses" in details:
            return UpstreamConnectError(endpoint, details)
        return UpstreamBroken(endpoint, details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and not clients_deadline:
        return UpstreamTimeout(endpoint, details)
    return UpstreamStatus(endpoint, code.name, details)


class Channel:
    """One endpoint's channel and its cached bytes-in/bytes-out callables."""

    __slots__ = ("_stream", "_unary", "address", "channel")

    def __init__(self, address: str, options: Iterable[tuple[str, Any]] = CHANNEL_OPTIONS) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=list(options))
        self._unary: dict[str, Any] = {}
        self._stream = self.channel.stream_stream(STREAM_INFER)

    def connect(self) -> None:
        self.channel.get_state(try_to_connect=True)

    def check_usable(self) -> None:
        """Raise :class:`UpstreamConnectError` when the channel cannot connect right now."""
        if self.channel.get_state() == _TRANSIENT_FAILURE:
            raise UpstreamConnectError(self.address, "channel in TRANSIENT_FAILURE (not connected)")

    async def unary(self, method: str, request: bytes, metadata: Metadata, timeout: float,
                    clients_deadline: bool) -> bytes:
        """Call ``/inference.GRPCInferenceService/<method>`` with the request's bytes."""
        self.check_usable()
        call = self._unary.get(method)
        if call is None:
            call = self._unary[method] = self.channel.unary_unary(f"/{SERVICE}/{method}")
        try:
            response: bytes = await call(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc.code(), exc.details() or "", self.address,
                            clients_deadline) from exc
        return response

    def open_stream(self, metadata: Metadata, timeout: float | None) -> Any:
        """A ModelStreamInfer call (``grpc.aio.StreamStreamCall`` of bytes)."""
        self.check_usable()
        return self._stream(metadata=metadata, timeout=timeout)


class GrpcChannels:
    def __init__(self, options: Iterable[tuple[str, Any]] = CHANNEL_OPTIONS) -> None:
        self._options = tuple(options)
        self._channels: dict[str, Channel] = {}

    def get(self, address: str) -> Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = Channel(address, self._options)
        return channel

    def warm(self, addresses: Iterable[str]) -> None:
        """Start connecting to ``addresses`` now rather than on their first call."""
        for address in addresses:
            self.get(address).connect()

    async def forget(self, live: set[str], grace: float) -> int:
        """Close the channels of addresses not in ``live`` (replicas that went away), letting
        calls still running on them finish within ``grace`` seconds."""
        gone = [a for a in self._channels if a not in live]
        closing = [self._channels.pop(a) for a in gone]
        await asyncio.gather(*(c.channel.close(grace) for c in closing))
        return len(gone)

    async def aclose(self, grace: float | None = None) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.channel.close(grace) for c in channels))
