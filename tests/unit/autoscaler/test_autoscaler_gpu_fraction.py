"""Fractional GPUs in the autoscaler: capacity targets given per GPU scale with what one
replica holds (pools.<pool>.cost), and the spec carries the fraction for cost."""

from __future__ import annotations

import pytest

from autoscaler.metrics import AutoscalerMetrics
from autoscaler.settings import pool_specs
from contracts import parse_config


def config(per_gpu: bool, cost: dict[str, object]) -> dict[str, object]:
    return {
        "pools": {"mig": {"cost": cost}, "whole": {}},
        "models": {"m": {"pool": "mig"}},
        "autoscaling": {"pools": {
            "mig": {"targets": {"rate_per_replica": 700, "queue_per_replica": 70,
                                "concurrency_per_replica": 14, "gpu_utilization": 0.7,
                                "per_gpu": per_gpu}},
            "whole": {"targets": {"rate_per_replica": 700, "per_gpu": True}}}},
    }


def test_per_gpu_targets_scale_with_the_mig_fraction() -> None:
    specs = pool_specs(parse_config(config(True, {"gpu_resource": "nvidia.com/mig-1g.10gb"})))
    t = specs["mig"].targets
    assert t.rate_per_replica == pytest.approx(100)
    assert t.queue_per_replica == pytest.approx(10)
    assert t.concurrency_per_replica == pytest.approx(2)
    assert t.gpu_utilization == 0.7  # a utilization is a ratio: no scaling
    assert specs["mig"].gpus_per_replica == pytest.approx(1 / 7)
    assert specs["whole"].targets.rate_per_replica == 700
    assert specs["whole"].gpus_per_replica == 1.0


def test_per_replica_targets_stay_as_written() -> None:
    specs = pool_specs(parse_config(config(False, {"gpus_per_replica": 0.25})))
    assert specs["mig"].targets.rate_per_replica == 700
    assert specs["mig"].gpus_per_replica == 0.25


def test_desired_gpus_metric() -> None:
    m = AutoscalerMetrics()
    m.decision("mig", desired=7, current=3, ready=3, demand=1.0, dominant="rate",
               clipped_by=(), valid=True, gpus_per_replica=1 / 7)
    assert m.registry.get_sample_value("servegate_autoscaler_desired_gpus",
                                       {"pool": "mig"}) == pytest.approx(1.0)
