"""The gRPC front door (``inference.GRPCInferenceService``) and its upstream channels.

:mod:`.service` answers or forwards each RPC, :mod:`.stream` relays ModelStreamInfer,
:mod:`.upstream` holds the warm channels to Triton, :mod:`.errors` chooses every status,
:mod:`.wire` reads the model name from the raw request bytes.
"""

from gateway.grpc.service import GrpcFront, build_server
from gateway.grpc.upstream import GrpcChannels

__all__ = ["GrpcChannels", "GrpcFront", "build_server"]
