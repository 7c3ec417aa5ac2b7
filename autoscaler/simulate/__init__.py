"""``servegate simulate``: servegate's policy against HPA-like, KPA-like and oracle policies.

profile (pool and SLO) + traces -> model (discrete-time Triton pool) run once per policy
(servegate's real ``decide`` through :mod:`.servegate`, the :mod:`.baselines`) by
:mod:`.runner` -> :mod:`.report` (table, JSON, PNG). Pure: no I/O library is imported.
"""
