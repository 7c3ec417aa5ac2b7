"""Background jobs of the gateway process, each one task of the server's task group, never on a
request's path: active health probes (prober), endpoint discovery (discovery, with the
Kubernetes EndpointSlice watch in discovery_k8s) and the counters published to Redis for the
autoscaler (publisher). The traffic manager's sync loop lives with it in ``gateway.traffic``.
"""
