"""The request path, protocol-neutral: what every inference call passes through between a front
door's parsing and its serializing.

    route (runtime: the immutable routing snapshot) -> split (splits) -> admit (admission:
    auth, quotas, in-flight caps, shedding) -> priority -> cold-start wait (coldstart)
    -> pick an endpoint (pools, P2C from router.balance) -> send + record (proxy)

Nothing here parses tensors; the fronts (``gateway.http``, ``gateway.grpc``) call in with the
model name and the raw body, and adapters (``gateway.adapters``) carry the bytes upstream.
"""
