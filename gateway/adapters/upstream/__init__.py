"""Upstream clients: the port (:mod:`.base`) and its implementations."""

from gateway.adapters.upstream.base import (
    HOP_BY_HOP,
    Headers,
    Upstream,
    UpstreamResponse,
    UpstreamStream,
)
from gateway.adapters.upstream.native import NativeUpstream

__all__ = ["HOP_BY_HOP", "Headers", "NativeUpstream", "Upstream", "UpstreamResponse",
           "UpstreamStream"]
