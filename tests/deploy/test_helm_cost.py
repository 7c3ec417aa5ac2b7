"""The chart's cost settings: pools.<pool>.cost rendered into the servegate config (GPUs per
replica from the pool's GPU resource, MIG as a fraction), the pod labels OpenCost/Kubecost can
aggregate by, and node placement by capacity type (spot vs on-demand)."""

from __future__ import annotations

import kubernetes_validate
import pytest

from contracts import parse_config
from tests.deploy.conftest import FULLNAME, POOLS, matrix_values, render


def pool_name(pool: str) -> str:
    return f"{FULLNAME}-triton-{pool}"


def three_pools() -> dict[str, object]:
    values = matrix_values("keda", False, 3)
    values["pools"] = {
        "gpu": {**POOLS["gpu"], "cost": {"price_per_gpu_hour": 4.1}},
        "mig": {**POOLS["mig"], "cost": {"capacity": "spot", "price_per_gpu_hour": 4.1,
                                         "spot_price_per_gpu_hour": 1.3}},
        "shared": {**POOLS["shared"], "cost": {"gpus_per_replica": 0.25,
                                               "price_per_gpu_hour": 2.0}},
    }
    return values


def test_cost_renders_into_a_valid_config_with_gpu_fractions() -> None:
    r = render(three_pools())
    cfg = parse_config(r.config(), "rendered servegate.yaml")
    assert cfg.pools["gpu"].cost.gpus == 1.0 and cfg.pools["gpu"].cost.price == 4.1
    assert cfg.pools["mig"].cost.gpus == pytest.approx(1 / 7)
    assert cfg.pools["mig"].cost.capacity == "spot" and cfg.pools["mig"].cost.price == 1.3
    assert cfg.pools["shared"].cost.gpus == 0.25


def test_pod_labels_for_cost_tools_and_spot_placement() -> None:
    r = render(three_pools())
    pods = {name: r.one("Deployment", pool_name(name))["spec"]["template"]
            for name in ("gpu", "mig", "shared")}
    labels = {n: p["metadata"]["labels"] for n, p in pods.items()}
    assert {n: lab["servegate.io/pool"] for n, lab in labels.items()} == {
        "gpu": "gpu", "mig": "mig", "shared": "shared"}
    assert labels["mig"]["servegate.io/capacity-type"] == "spot"
    assert labels["gpu"]["servegate.io/capacity-type"] == "on_demand"
    # a pool serving exactly one model names it; gpu serves classifier, shared embedder
    assert labels["gpu"]["servegate.io/model"] == "classifier"
    assert labels["shared"]["servegate.io/model"] == "embedder"
    spot = pods["mig"]["spec"]
    assert spot["nodeSelector"] == {"karpenter.sh/capacity-type": "spot"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        spot["tolerations"]  # the pool's own tolerations stay
    assert "nodeSelector" not in pods["gpu"]["spec"]
    for d in r.pool_deployments():
        kubernetes_validate.validate(d, "1.29.0", strict=True)


def test_placement_per_capacity_type_is_configurable() -> None:
    values = three_pools()
    values["capacityPlacement"] = {
        # null removes the default's key (Helm merges maps with the chart's defaults)
        "spot": {"nodeSelector": {"cloud.google.com/gke-spot": "true",
                                  "karpenter.sh/capacity-type": None},
                 "tolerations": [{"key": "cloud.google.com/gke-spot", "operator": "Equal",
                                  "value": "true", "effect": "NoSchedule"}]},
        "on_demand": {"nodeSelector": {"cloud.google.com/gke-provisioning": "standard"}}}
    r = render(values)
    spot = r.one("Deployment", pool_name("mig"))["spec"]["template"]["spec"]
    assert spot["nodeSelector"] == {"cloud.google.com/gke-spot": "true"}
    assert any(t["key"] == "cloud.google.com/gke-spot" for t in spot["tolerations"])
    od = r.one("Deployment", pool_name("gpu"))["spec"]["template"]["spec"]
    assert od["nodeSelector"] == {"cloud.google.com/gke-provisioning": "standard"}


def test_fallback_pool_renders_and_an_unknown_one_fails() -> None:
    values = three_pools()
    values["pools"]["mig"]["fallback_pool"] = "gpu"  # type: ignore[index]
    values["pools"]["mig"]["fallback_spill_at"] = 8  # type: ignore[index]
    cfg = parse_config(render(values).config(), "rendered servegate.yaml")
    assert cfg.pools["mig"].fallback_pool == "gpu"
    assert cfg.pools["mig"].fallback_spill_at == 8
    values["pools"]["mig"]["fallback_pool"] = "nope"  # type: ignore[index]
    with pytest.raises(Exception, match=r"pools\.mig\.fallback_pool: unknown pool"):
        render(values)
