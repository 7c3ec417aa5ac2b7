"""``servegate simulate``: servegate's policy against HPA, KEDA + HPA, Knative KPA and an oracle.

profile (pool and SLO) + traces (:mod:`.traces`, built-in or CSV, seeded) -> model
(:mod:`.model`: per-replica queues behind power-of-two-choices balancing, jittered service
and start-up, each system's metrics delay) run per policy (servegate's real ``decide``
through :mod:`.servegate`; the baselines of :mod:`.baselines` at their defaults and over the
grids of :mod:`.fronts`; the offline :mod:`.oracle`) by :mod:`.runner` -> :mod:`.report`
(tables, JSON, PNGs) and :mod:`.paired` (paired seeds). Pure: no I/O library is imported.
"""
