"""The config's ``autoscaling`` section and what the autoscaler builds from it."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from autoscaler.policy import ScalerSpec, Targets, Variant
from autoscaler.settings import pool_specs, spec_from_config, split_variants
from contracts import ConfigError, parse_config
from contracts.autoscaling import PoolAutoscalingConfig

YAML = """
pools:
  cpu: {endpoints: ["10.0.0.1:8000"]}
  canary: {endpoints: ["10.0.0.2:8000"]}
models:
  classifier:
    pool: cpu
    split:
      variants:
        stable: {weight: 90}
        next: {weight: 10, pool: canary}
        mirror: {weight: 0, pool: canary}
      shadow: {variant: mirror, percent: 20}
  embedder: {pool: cpu}
autoscaling:
  signals:
    gateways: ["http://gw-0:8000"]
    p99_window_s: 15
  pools:
    cpu:
      max_replicas: 8
      targets: {rate_per_replica: 120, queue_per_replica: 600}
      p99_slo_s: 0.5
      scale_up: {period_s: 15, pods: 4, percent: 100}
      scale_down: null
      schedules:
        - {days: "mon-fri", start: "08:00", end: "18:00", timezone: "Europe/Berlin",
           min_replicas: 2}
    canary:
      targets: {gpu_utilization: 0.7}
"""


def cfg(text: str = YAML) -> Any:
    return parse_config(yaml.safe_load(text), "cfg.yaml")


def test_autoscaling_section_is_optional_and_parsed() -> None:
    assert parse_config({"pools": {"p": {}}, "models": {"m": {"pool": "p"}}}).autoscaling is None
    c = cfg()
    assert c.autoscaling is not None
    assert c.autoscaling.signals.gateways == ["http://gw-0:8000"]
    cpu = c.autoscaling.pools["cpu"]
    assert cpu.max_replicas == 8 and cpu.scale_down is None
    assert cpu.schedules[0].timezone == "Europe/Berlin"


def test_specs_from_the_config() -> None:
    specs = pool_specs(cfg())
    cpu = specs["cpu"]
    assert cpu.targets == Targets(rate_per_replica=120.0, queue_per_replica=600.0)
    assert cpu.p99_window_s == 15 and cpu.scale_down is None
    assert cpu.scale_up is not None and cpu.scale_up.period_s == 15
    assert cpu.schedules[0].min_replicas == 2 and cpu.schedules[0].days == frozenset(range(5))
    assert specs["canary"].targets.gpu_utilization == 0.7


def test_config_defaults_are_the_policy_defaults() -> None:
    targets = Targets(rate_per_replica=1.0)
    from_config = spec_from_config(PoolAutoscalingConfig.model_validate(
        {"targets": {"rate_per_replica": 1.0}}))
    assert from_config == ScalerSpec(targets=targets)


def test_split_variants_from_the_config() -> None:
    assert split_variants(cfg()) == {"classifier": [
        Variant("cpu", 90, stable=True), Variant("canary", 10),
        Variant("canary", 0.2, shadow=True)]}


@pytest.mark.parametrize(("patch", "where", "what"), [
    ({"pools": {"gpu": {"targets": {"rate_per_replica": 1}}}}, "autoscaling.pools.gpu",
     "unknown pool"),
    ({"pools": {"cpu": {"targets": {}}}}, "autoscaling.pools.cpu", "at least one target"),
    ({"pools": {"cpu": {"min_replicas": 5, "max_replicas": 2,
                        "targets": {"rate_per_replica": 1}}}}, "autoscaling.pools.cpu", "min"),
    ({"pools": {"cpu": {"targets": {"gpu_utilization": 70}}}}, "gpu_utilization", "less than"),
    ({"pools": {"cpu": {"targets": {"rate_per_replica": 1}, "scale_up": {"period_s": 1}}}},
     "scale_up", "pods"),
    ({"pools": {"cpu": {"targets": {"rate_per_replica": 1}, "schedules": [
        {"days": "mon-fri", "start": "8", "end": "18:00", "min_replicas": 1}]}}}, "start",
     "HH:MM"),
    ({"pools": {"cpu": {"targets": {"rate_per_replica": 1}, "schedules": [
        {"start": "08:00", "end": "18:00", "timezone": "Nowhere/City", "min_replicas": 1}]}}},
     "timezone", "time zone"),
    ({"pools": {"cpu": {"targets": {"rate_per_replica": 1}, "panic_window_s": 90}}},
     "autoscaling.pools.cpu", "panic_window_s"),
    ({"signals": {"gateway": ["x"]}}, "signals.gateway", "Extra inputs"),
])
def test_invalid_autoscaling_sections(patch: dict[str, Any], where: str, what: str) -> None:
    doc = {"pools": {"cpu": {}}, "models": {"m": {"pool": "cpu"}}, "autoscaling": patch}
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "cfg.yaml")
    text = str(info.value)
    assert where in text and what in text, text
