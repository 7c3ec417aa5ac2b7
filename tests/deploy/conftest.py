"""Render the Helm chart with the real Helm engine (helm-python-sdk embeds Helm v4).

``render(values)`` returns a :class:`Rendered` (every manifest parsed, plus helpers to find
objects); renders are cached per values document, so parametrized tests share them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate.utils
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "servegate"
RELEASE, NAMESPACE = "sg", "ml"
FULLNAME = f"{RELEASE}-servegate"

# Three pools on the three kinds of GPU resource the chart supports.
POOLS: dict[str, dict[str, Any]] = {
    "gpu": {"modelRepository": {"uri": "s3://models/triton/stable"},
            "autoscaling": {"min_replicas": 0, "max_replicas": 4,
                            "targets": {"queue_per_replica": 32}}},
    "mig": {"gpu": {"resource": "nvidia.com/mig-1g.10gb", "count": 1},
            "modelRepository": {"uri": "gs://models/triton/canary"},
            "autoscaling": {"min_replicas": 1, "max_replicas": 3,
                            "targets": {"concurrency_per_replica": 8}}},
    "shared": {"gpu": {"resource": "nvidia.com/gpu.shared", "count": 1},
               "modelRepository": {"uri": "az://models/embedders",
                                   "credentialsSecret": "blob-reader"},
               "autoscaling": {"min_replicas": 0, "max_replicas": 2,
                               "targets": {"rate_per_replica": 50}}},
}

MODES = ("keda", "hpa", "direct")
MATRIX = [(mode, redis, npools) for mode in MODES for redis in (False, True) for npools in (1, 3)]
MATRIX_IDS = [f"{m}-{'redis' if r else 'noredis'}-{n}pool" for m, r, n in MATRIX]


def matrix_values(mode: str, redis: bool, npools: int) -> dict[str, Any]:
    names = list(POOLS)[:npools]
    models: dict[str, Any] = {"classifier": {"pool": names[0]}}
    if npools > 1:
        models["classifier"]["versions"] = {"2": {"pool": names[1]}}
        models["classifier"]["split"] = {"variants": {"stable": {"weight": 90, "version": 1},
                                                      "canary": {"weight": 10, "version": 2}}}
        models["embedder"] = {"pool": names[2]}
    values: dict[str, Any] = {
        "scaling": {"mode": mode},
        "pools": {n: POOLS[n] for n in names},
        "models": models,
        "adminToken": {"existingSecret": "servegate-admin"},
    }
    if redis:
        values["redis"] = {"enabled": True, "existingSecret": "servegate-redis"}
    return values


@dataclass
class Rendered:
    values: dict[str, Any]
    files: dict[str, str]
    docs: list[dict[str, Any]]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: found {len(found)} in {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        return [f"{d['kind']}/{d['metadata']['name']}" for d in self.docs]

    def config(self) -> dict[str, Any]:
        cm = self.one("ConfigMap", f"{FULLNAME}-config")
        parsed: dict[str, Any] = yaml.safe_load(cm["data"]["servegate.yaml"])
        return parsed

    def gateway(self) -> dict[str, Any]:
        return self.one("Deployment", FULLNAME)

    def container(self, deployment: dict[str, Any], name: str) -> dict[str, Any]:
        spec = deployment["spec"]["template"]["spec"]
        (c,) = [c for c in spec["containers"] + spec.get("initContainers", [])
                if c["name"] == name]
        return c

    def pool_deployments(self) -> list[dict[str, Any]]:
        return [d for d in self.kind("Deployment")
                if d["metadata"]["labels"].get("app.kubernetes.io/component") == "triton"]

    def notes(self) -> str:
        return self.files[f"{CHART.name}/templates/NOTES.txt"]


_cache: dict[str, Rendered] = {}


def render(values: dict[str, Any] | None = None) -> Rendered:
    key = json.dumps(values or {}, sort_keys=True)
    if key not in _cache:
        with helm.Chart.load(CHART) as chart:
            files = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
        docs = [d for path, text in sorted(files.items()) if path.endswith(".yaml")
                for d in yaml.safe_load_all(text) if d]
        _cache[key] = Rendered(values or {}, files, docs)
    return _cache[key]


@pytest.fixture(params=MATRIX, ids=MATRIX_IDS)
def rendered(request: pytest.FixtureRequest) -> Iterator[Rendered]:
    mode, redis, npools = request.param
    yield render(matrix_values(mode, redis, npools))


@pytest.fixture(scope="session", autouse=True)
def _cached_kubernetes_schemas() -> Iterator[None]:
    """kubernetes-validate re-reads its 1.8 MB definitions file for every object; read each
    shipped schema file once per session (10x faster, same validation)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kubernetes_validate.utils, "schema_contents",
                   functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents))
        yield
