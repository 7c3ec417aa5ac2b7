"""servegate's data plane: REST front door, routing to Triton pools, upstream clients, metrics.

Entry points: ``servegate gateway --config FILE`` (:mod:`gateway.server`) and
``servegate demo`` (:mod:`servegate.demo`).
"""

__version__ = "0.1.0"
