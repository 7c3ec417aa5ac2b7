"""servegate's data plane: V2 REST and gRPC front doors, one request path, routing to Triton pools.

The rooms (README, "How it is built", draws the flow):

    server.py   the composition root: builds the parts, serves, reloads, shuts down
    http/       REST front door (ASGI), the endpoints the gateway answers itself, the admin API
    grpc/       gRPC front door, ModelStreamInfer relay, gRPC channels to Triton
    pipeline/   the request path shared by both fronts: route, split, admit, priority,
                cold-start wait, pick, send, record
    traffic/    traffic management off the request path: weights, rollouts, shadow
    jobs/       background tasks: probes, discovery, counter publishing
    adapters/   upstream HTTP client, Redis shared state, the autoscaler's activation signal
    config.py settings.py errors.py metrics.py stats.py   what every room reads

Entry points: ``servegate gateway --config FILE`` (:mod:`gateway.server`, wired by
:mod:`servegate.cli`) and ``servegate demo`` (:mod:`servegate.demo`).
"""

__version__ = "0.1.0"
