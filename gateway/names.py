"""Names both front doors answer with, so neither front imports the other.

Where it sits: read by the REST front (``gateway.http``) and the gRPC front (``gateway.grpc``)
when they answer: the response header (REST) / trailing metadata key (gRPC) that names the
variant a split chose, and the V2 server-metadata extensions the gateway announces.
"""

from __future__ import annotations

# Public contract: the variant that served a split model's call.
VARIANT_HEADER = b"x-servegate-variant"

# V2 server metadata ``extensions`` (REST ``GET /v2``, gRPC ``ServerMetadata``).
EXTENSIONS = [
    "classification", "model_configuration", "binary_tensor_data", "parameters", "statistics",
    "model_repository",
]
