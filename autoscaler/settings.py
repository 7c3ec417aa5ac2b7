"""From the validated config to what the autoscaler runs on: policy specs and split plans.

Where it sits: at startup, before the control loop, on the config that
:func:`adapters.configfile.load_config_file` read.
The config's ``autoscaling`` section (:mod:`contracts.autoscaling`) becomes one
:class:`~autoscaler.policy.ScalerSpec` per pool, and each model's traffic split becomes the
variant list :func:`autoscaler.policy.plan_split` plans replicas for.
"""

from __future__ import annotations

from autoscaler.policy import RateLimit, ScalerSpec, Targets, Variant, make_window
from contracts.autoscaling import PoolAutoscalingConfig, RateLimitConfig
from contracts.config import Config, variant_pool


def _rate(cfg: RateLimitConfig | None) -> RateLimit | None:
    return None if cfg is None else RateLimit(cfg.period_s, cfg.pods, cfg.percent)


def spec_from_config(cfg: PoolAutoscalingConfig, p99_window_s: float = 10.0,
                     gpus_per_replica: float = 1.0, fallback_pool: str | None = None
                     ) -> ScalerSpec:
    """The policy spec of one pool; capacity targets given ``per_gpu`` are scaled to what one
    replica holds (``gpus_per_replica``, from the pool's ``cost``)."""
    t = cfg.targets
    per = gpus_per_replica if t.per_gpu else 1.0
    return ScalerSpec(
        targets=Targets(_scaled(t.concurrency_per_replica, per), _scaled(t.rate_per_replica, per),
                        _scaled(t.queue_per_replica, per), t.gpu_utilization, t.queue_time_s,
                        t.batch_fill),
        gpus_per_replica=gpus_per_replica, fallback_pool=fallback_pool,
        min_replicas=cfg.min_replicas, max_replicas=cfg.max_replicas,
        p99_slo_s=cfg.p99_slo_s, max_slo_boost=cfg.max_slo_boost, p99_window_s=p99_window_s,
        tolerance=cfg.tolerance, stable_window_s=cfg.stable_window_s,
        panic_window_s=cfg.panic_window_s, panic_threshold=cfg.panic_threshold,
        scale_up=_rate(cfg.scale_up), scale_down=_rate(cfg.scale_down),
        scale_down_stabilization_s=cfg.scale_down_stabilization_s,
        max_scale_down_stabilization_s=cfg.max_scale_down_stabilization_s,
        scale_to_zero_grace_s=cfg.scale_to_zero_grace_s,
        schedules=tuple(make_window(s.days, s.start, s.end, s.timezone, s.min_replicas, s.name)
                        for s in cfg.schedules))


def _scaled(target: float | None, factor: float) -> float | None:
    return None if target is None else target * factor


def pool_specs(config: Config) -> dict[str, ScalerSpec]:
    """One spec per pool the ``autoscaling`` section lists (none without the section)."""
    if config.autoscaling is None:
        return {}
    window = config.autoscaling.signals.p99_window_s
    return {pool: spec_from_config(cfg, window, config.pools[pool].cost.gpus,
                                   config.pools[pool].fallback_pool)
            for pool, cfg in config.autoscaling.pools.items()}


def split_variants(config: Config) -> dict[str, list[Variant]]:
    """Per model with a split: its variants' pools and weights, the baseline as stable.

    A shadow variant is planned by its mirrored percentage, on top of the serving shares.
    """
    out: dict[str, list[Variant]] = {}
    for model, route in config.models.items():
        split = route.split
        if split is None:
            continue
        shadow = split.shadow.variant if split.shadow else None
        variants = []
        for name, var in split.variants.items():
            pool = variant_pool(config, model, var)
            if pool is None:
                continue
            if name == shadow and split.shadow is not None:
                variants.append(Variant(pool, split.shadow.percent / 100, shadow=True))
            else:
                variants.append(Variant(pool, var.weight, stable=name == split.baseline_name))
        out[model] = variants
    return out
