"""Upstream clients: the port (:mod:`.base`) and its implementations."""

from gateway.upstream.base import HOP_BY_HOP, Headers, Upstream, UpstreamResponse
from gateway.upstream.native import NativeUpstream

__all__ = ["HOP_BY_HOP", "Headers", "NativeUpstream", "Upstream", "UpstreamResponse"]
