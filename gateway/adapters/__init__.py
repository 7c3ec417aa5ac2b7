"""The gateway's adapters to the systems around it, each translating its library's errors into
``gateway.errors`` in one place: the upstream HTTP client to Triton (upstream), the shared
traffic state in Redis (state) and the activation signal to the autoscaler (activation). The
gRPC channels to Triton live with the gRPC front (``gateway.grpc.upstream``); adapters both
processes use (Kubernetes API, child processes, outage logging) are in the top-level
``adapters`` package.
"""
