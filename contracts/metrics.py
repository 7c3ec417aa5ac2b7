"""The gateway's Prometheus metric names that other programs read: the contract between the
gateway's ``/metrics`` and the autoscaler's scraper (and dashboards, alerts, KEDA/HPA queries).

Where it sits: the gateway declares these series (``gateway.metrics``) and the autoscaler parses
them (``autoscaler.signals.gateway``); both import the names from here, so a rename is one
edit that both sides see. Names are the family names (Prometheus adds ``_total`` to counters
and ``_bucket``/``_sum``/``_count`` to histograms on the wire).
"""

from __future__ import annotations

# Counter {model, endpoint, protocol, code_class}: requests answered by a backend.
REQUESTS = "servegate_requests"
# Histogram {model, endpoint, protocol}: time from request to full response.
REQUEST_DURATION = "servegate_request_duration_seconds"
# Counter {model, protocol, code}: requests the gateway answered itself with an error.
REJECTED = "servegate_rejected_requests"
# Gauge {model}: requests in flight.
IN_FLIGHT = "servegate_in_flight_requests"
# Gauge {pool}: requests held while the pool has no ready endpoint (cold start).
QUEUED = "servegate_queued_requests"
