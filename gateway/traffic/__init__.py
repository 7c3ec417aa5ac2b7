"""Traffic management off the request path: split weights, pins and drains (manager), progressive
rollouts (rollouts: documents and specs; the verdicts are pure, in ``router.rollout``), the
per-variant counters rollouts judge on (fleetstats), the background sync with other replicas
(sync), and the shadow mirror with its output diffing (shadow, compare). The request path's
own split step is ``gateway.pipeline.splits``.
"""
