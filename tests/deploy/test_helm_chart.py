"""The Helm chart, rendered by the real Helm engine for each scaling mode, with and without
Redis, with one and three pools: lint, Kubernetes schemas, security, RBAC, network policy,
scaling objects, the rendered servegate config, and values.schema.json's error messages."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from autoscaler.settings import pool_specs
from contracts.config import parse_config
from servegate.cli import _parser as servegate_cli
from tests.deploy.conftest import (
    CHART,
    FULLNAME,
    MATRIX,
    MATRIX_IDS,
    MODES,
    NAMESPACE,
    POOLS,
    REPO,
    Rendered,
    matrix_values,
    render,
)

# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.29", "1.37")
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))

# CRDs have no schema in kubernetes-validate: the fields KEDA and the Prometheus Operator
# require, and the types of the ones the chart sets (from their CRD definitions).
_INT0 = {"type": "integer", "minimum": 0}
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object", "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                   "name": {"type": "string", "minLength": 1},
                                   "envSourceContainerName": {"type": "string"}}},
                "minReplicaCount": _INT0, "maxReplicaCount": _INT0, "idleReplicaCount": _INT0,
                "pollingInterval": _INT0, "cooldownPeriod": _INT0,
                "initialCooldownPeriod": _INT0,
                "advanced": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"name": {"type": "string"},
                                           "behavior": {"type": "object"}}}}},
                "triggers": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"}, "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "metadata": {"type": "object",
                                         "additionalProperties": {"type": "string"}},
                            "authenticationRef": {"type": "object"}}}},
            }},
    },
}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object", "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object",
                             "properties": {"matchLabels": {
                                 "type": "object", "additionalProperties": {"type": "string"}}}},
                "namespaceSelector": {"type": "object", "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {"type": "object", "properties": {
                        "port": {"type": "string"}, "path": {"type": "string"},
                        "interval": {"type": "string",
                                     "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
                                                r"(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
                                                r"(([0-9]+)ms)?)$"}}}},
            }},
    },
}
CRD_SCHEMAS = {"ScaledObject": SCALED_OBJECT, "ServiceMonitor": SERVICE_MONITOR}

RESTRICTED = {
    "runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
    "privileged": False, "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def k8s_validate(doc: dict[str, Any]) -> None:
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} against "
                                 f"Kubernetes {version}: {where}: {e.message}") from None


def validate_manifest(doc: dict[str, Any]) -> None:
    if doc["kind"] in CRD_SCHEMAS:
        jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
        if doc["kind"] == "ScaledObject":  # behavior is an HPA's spec.behavior
            behavior = doc["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
            k8s_validate(hpa_with(behavior))
    else:
        k8s_validate(doc)  # SchemaNotFoundError (an unknown kind) fails the test too


def hpa_with(behavior: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "behavior-check"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "x"},
                     "maxReplicas": 1, "behavior": behavior}}


def pool_name(pool: str) -> str:
    return f"{FULLNAME}-triton-{pool}"


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


# --- lint and schemas ------------------------------------------------------------------------

@pytest.mark.parametrize("values", [None, *EXAMPLES, *MATRIX],
                         ids=["defaults", *[e.stem for e in EXAMPLES], *MATRIX_IDS])
def test_lint_passes(values: Path | tuple[str, bool, int] | None) -> None:
    if isinstance(values, Path):
        vals = yaml.safe_load(values.read_text())
    elif isinstance(values, tuple):
        vals = matrix_values(*values)
    else:
        vals = None
    report = helm.lint(CHART, vals, strict=True, namespace=NAMESPACE, kube_version="v1.29.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_every_manifest_validates(rendered: Rendered) -> None:
    assert rendered.docs
    for doc in rendered.docs:
        validate_manifest(doc)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
@pytest.mark.parametrize("mode", MODES)
def test_examples_render_and_validate(example: Path, mode: str) -> None:
    values = yaml.safe_load(example.read_text())
    values.setdefault("scaling", {})["mode"] = mode
    r = render(values)
    for doc in r.docs:
        validate_manifest(doc)
    parse_config(r.config(), "rendered servegate.yaml")


def test_validation_is_not_vacuous() -> None:
    """The validators do reject a broken manifest (so a pass above means something)."""
    r = render(matrix_values("keda", False, 1))
    broken = copy.deepcopy(r.gateway())
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(AssertionError, match="containerPort"):
        validate_manifest(broken)
    typo = copy.deepcopy(r.gateway())
    typo["spec"]["replica"] = 2
    with pytest.raises(AssertionError, match="replica"):
        validate_manifest(typo)
    so = copy.deepcopy(r.kind("ScaledObject")[0])
    del so["spec"]["triggers"]
    with pytest.raises(jsonschema.ValidationError, match="triggers"):
        validate_manifest(so)


def test_defaults_render_a_gateway_without_pools() -> None:
    r = render(None)
    assert r.gateway() and not r.pool_deployments()
    assert not r.kind("NetworkPolicy") and not r.kind("ScaledObject")
    cfg = parse_config(r.config(), "rendered servegate.yaml")
    assert cfg.pools == {} and cfg.models == {}
    assert "No Triton pools are configured" in r.notes()


# --- security ----------------------------------------------------------------------------------

def test_restricted_pod_security_and_resources_everywhere(rendered: Rendered) -> None:
    deployments = rendered.kind("Deployment")
    assert len(deployments) == 1 + len(rendered.values["pools"])
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        containers = pod["containers"] + pod.get("initContainers", [])
        for c in containers:
            where = f"{d['metadata']['name']}/{c['name']}"
            assert c["securityContext"] == RESTRICTED, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where} {kind}"
            assert not c["image"].endswith(":latest"), where
        for v in pod.get("volumes", []):
            assert set(v) & {"emptyDir", "configMap"}, f"unexpected volume {v}"


def test_triton_pods_get_no_api_token_and_gateway_pods_do(rendered: Rendered) -> None:
    for d in rendered.pool_deployments():
        assert d["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    gw = rendered.gateway()["spec"]["template"]["spec"]
    assert gw["automountServiceAccountToken"] is True
    assert gw["serviceAccountName"] == FULLNAME


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("npools", [1, 3])
def test_rbac_is_exactly_what_the_mode_needs(mode: str, npools: int) -> None:
    r = render(matrix_values(mode, False, npools))
    assert not r.kind("ClusterRole") and not r.kind("ClusterRoleBinding")
    (role,) = r.kind("Role")
    verbs: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs.setdefault((group, resource), set()).update(rule["verbs"])
    expected = {("discovery.k8s.io", "endpointslices"): {"get", "list", "watch"}}
    if mode == "direct":
        expected[("apps", "deployments/scale")] = {"get", "patch"}
        expected[("apps", "deployments")] = {"get"}  # status.readyReplicas
        expected[("coordination.k8s.io", "leases")] = {"get", "create", "patch"}
    assert verbs == expected
    deployments = sorted(pool_name(p) for p in list(POOLS)[:npools])
    for rule in role["rules"]:
        if rule["resources"][0].startswith("deployments"):
            # only the pools' own Deployments, by name
            assert sorted(rule["resourceNames"]) == deployments
        if rule["resources"] == ["leases"] and rule["verbs"] != ["create"]:
            assert rule["resourceNames"] == [f"{FULLNAME}-autoscaler"]
    if mode == "direct":
        sidecar = r.container(r.gateway(), "autoscaler")
        assert f"--lease-name={FULLNAME}-autoscaler" in sidecar["args"]
    (binding,) = r.kind("RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME,
                                    "namespace": NAMESPACE}]
    assert r.one("ServiceAccount", FULLNAME)


def test_network_policy_admits_only_the_gateway(rendered: Rendered) -> None:
    (np,) = rendered.kind("NetworkPolicy")
    spec = np["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    selector = spec["podSelector"]["matchLabels"]
    for d in rendered.pool_deployments():
        assert labels_match(selector, pod_labels(d)), d["metadata"]["name"]
    assert not labels_match(selector, pod_labels(rendered.gateway()))
    (rule,) = spec["ingress"]  # no metricsFrom: one rule
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # same namespace, pods only; no ipBlock / namespaces
    assert labels_match(peer["podSelector"]["matchLabels"], pod_labels(rendered.gateway()))
    for d in rendered.pool_deployments():
        assert not labels_match(peer["podSelector"]["matchLabels"], pod_labels(d))
    assert sorted(p["port"] for p in rule["ports"]) == [8000, 8001, 8002]


def test_network_policy_lets_scrapers_reach_only_the_metrics_port() -> None:
    values = matrix_values("keda", False, 1)
    scrapers = [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    values["networkPolicy"] = {"metricsFrom": scrapers}
    (np,) = render(values).kind("NetworkPolicy")
    gateway_rule, scrape_rule = np["spec"]["ingress"]
    assert scrape_rule == {"from": scrapers, "ports": [{"port": 8002, "protocol": "TCP"}]}
    assert len(gateway_rule["ports"]) == 3


def test_no_secret_values_in_the_rendered_chart(rendered: Rendered) -> None:
    text = "\n".join(rendered.files.values())
    assert "redis://" not in text and "rediss://" not in text
    assert not rendered.kind("Secret")


# --- gateway, sidecar, services -------------------------------------------------------------

def test_gateway_and_autoscaler_sidecar(rendered: Rendered) -> None:
    mode = rendered.values["scaling"]["mode"]
    gw = rendered.container(rendered.gateway(), "gateway")
    assert gw["args"][0] == "gateway"
    assert {"--config=/etc/servegate/servegate.yaml", "--http-port=8000",
            "--grpc-port=8001", "--watch"} <= set(gw["args"])
    assert gw["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    sidecar = rendered.container(rendered.gateway(), "autoscaler")
    assert sidecar["args"][0] == "autoscaler"
    actuator = {"keda": "keda", "hpa": "hpa", "direct": "kubernetes"}[mode]
    assert f"--actuator={actuator}" in sidecar["args"]
    assert "--status-port=9096" in sidecar["args"]
    assert ("--keda-port=9095" in sidecar["args"]) == (mode == "keda")
    assert "--autoscaler-url=http://127.0.0.1:9096" in gw["args"]
    assert ("--redis-url=$(SERVEGATE_REDIS_URL)" in sidecar["args"]) == \
        bool(rendered.values.get("redis"))
    token = env_of(gw)["SERVEGATE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "servegate-admin", "key": "token"}
    for c in (gw, sidecar):
        env = env_of(c)
        if rendered.values.get("redis"):
            ref = env["SERVEGATE_REDIS_URL"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "servegate-redis", "key": "url"}
            assert "value" not in env["SERVEGATE_REDIS_URL"]
        else:
            assert "SERVEGATE_REDIS_URL" not in env
    assert "SERVEGATE_ADMIN_TOKEN" not in env_of(sidecar)


def test_container_args_parse_with_the_servegate_cli(rendered: Rendered) -> None:
    """The rendered command lines are ones `servegate` accepts (flags and values)."""
    env = {"POD_NAME": "sg-servegate-0", "POD_NAMESPACE": NAMESPACE,
           "SERVEGATE_REDIS_URL": "redis://redis:6379/0"}
    for name in ("gateway", "autoscaler"):
        args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a)
                for a in rendered.container(rendered.gateway(), name)["args"]]
        parsed = servegate_cli().parse_args(args)
        assert parsed.command == name
        assert str(parsed.config) == "/etc/servegate/servegate.yaml"


def test_admin_token_is_optional() -> None:
    values = matrix_values("keda", False, 1)
    del values["adminToken"]
    gw = render(values).container(render(values).gateway(), "gateway")
    assert "SERVEGATE_ADMIN_TOKEN" not in env_of(gw)


def _service_targets(r: Rendered, service: dict[str, Any],
                     deployment: dict[str, Any]) -> dict[str, int]:
    """Service port name -> the container port it reaches in ``deployment``'s pods."""
    assert labels_match(service["spec"]["selector"], pod_labels(deployment))
    ports = {p["name"]: p["containerPort"]
             for c in deployment["spec"]["template"]["spec"]["containers"]
             for p in c.get("ports", [])}
    return {p["name"]: ports[p["targetPort"]] for p in service["spec"]["ports"]}


def test_gateway_services(rendered: Rendered) -> None:
    gw = rendered.gateway()
    assert _service_targets(rendered, rendered.one("Service", FULLNAME), gw) == {"http": 8000}
    grpc = rendered.one("Service", f"{FULLNAME}-grpc")
    assert _service_targets(rendered, grpc, gw) == {"grpc": 8001}
    assert grpc["spec"]["ports"][0]["appProtocol"] == "grpc"
    metrics = rendered.one("Service", f"{FULLNAME}-metrics")
    assert _service_targets(rendered, metrics, gw) == {"metrics": 8000, "autoscaler": 9096}
    scalers = [s for s in rendered.kind("Service") if s["metadata"]["name"].endswith("-scaler")]
    assert len(scalers) == (rendered.values["scaling"]["mode"] == "keda")
    (pdb,) = rendered.kind("PodDisruptionBudget")
    assert labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels(gw))
    assert pdb["spec"]["maxUnavailable"] == 1


# --- pools -------------------------------------------------------------------------------------

def test_pool_deployments(rendered: Rendered) -> None:
    pools = rendered.values["pools"]
    assert sorted(d["metadata"]["name"] for d in rendered.pool_deployments()) == \
        sorted(pool_name(p) for p in pools)
    for name, values in pools.items():
        d = rendered.one("Deployment", pool_name(name))
        assert "replicas" not in d["spec"]  # owned by KEDA / the HPA / the sidecar
        pod = d["spec"]["template"]["spec"]
        triton = rendered.container(d, "triton")
        assert triton["image"] == "nvcr.io/nvidia/tritonserver:25.01-py3"
        resource = values.get("gpu", {}).get("resource", "nvidia.com/gpu")
        assert triton["resources"]["limits"][resource] == 1
        assert "--model-repository=/models" in triton["args"]
        for probe in ("readinessProbe", "startupProbe"):
            assert triton[probe]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
        # weights come from object storage into an emptyDir, never from an image
        fetch = rendered.container(d, "fetch-models")
        uri = values["modelRepository"]["uri"]
        scheme, rest = uri.split("://")
        backend = {"s3": ":s3:", "gs": ":gcs:", "az": ":azureblob:"}[scheme]
        assert fetch["args"][:3] == ["copy", backend + rest, "/models"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["models"]
        mounts = {m["name"]: m for m in triton["volumeMounts"]}
        assert mounts["models"]["readOnly"] is True
        assert {m["name"] for m in fetch["volumeMounts"]} >= {"models"}
        secret = values["modelRepository"].get("credentialsSecret")
        assert fetch.get("envFrom", []) == ([{"secretRef": {"name": secret}}] if secret else [])
        svc = rendered.one("Service", pool_name(name))
        assert _service_targets(rendered, svc, d) == {"http": 8000, "grpc": 8001,
                                                      "metrics": 8002}


def test_pool_settings_override_defaults_even_with_zero() -> None:
    """A CPU-only pool (gpu.count 0, no tolerations) really loses the GPU defaults."""
    values = matrix_values("direct", False, 1)
    values["pools"]["gpu"] = {**POOLS["gpu"], "gpu": {"count": 0}, "tolerations": [],
                              "autoscaling": {"max_replicas": 2,
                                              "targets": {"rate_per_replica": 10}}}
    r = render(values)
    d = r.one("Deployment", pool_name("gpu"))
    triton = r.container(d, "triton")
    assert not [k for k in triton["resources"]["limits"] if k.startswith("nvidia.com/")]
    assert "--allow-gpu-metrics=false" in triton["args"]
    assert "tolerations" not in d["spec"]["template"]["spec"]
    pool_as = r.config()["autoscaling"]["pools"]["gpu"]
    assert pool_as["targets"] == {"rate_per_replica": 10}  # replaced, not merged
    assert pool_as["min_replicas"] == 0 and pool_as["max_replicas"] == 2


# --- scaling -----------------------------------------------------------------------------------

def test_scaling_objects(rendered: Rendered) -> None:
    mode = rendered.values["scaling"]["mode"]
    pools = rendered.values["pools"]
    scaled, hpas = rendered.kind("ScaledObject"), rendered.kind("HorizontalPodAutoscaler")
    assert len(scaled) == (len(pools) if mode == "keda" else 0)
    assert len(hpas) == (len(pools) if mode == "hpa" else 0)
    behavior = yaml.safe_load((CHART / "values.yaml").read_text())["scaling"]["behavior"]
    for name, values in pools.items():
        bounds = values["autoscaling"]
        target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": pool_name(name)}
        if mode == "keda":
            so = rendered.one("ScaledObject", pool_name(name))["spec"]
            assert so["scaleTargetRef"] == target
            assert so["minReplicaCount"] == bounds["min_replicas"]  # 0: scale to zero
            assert so["maxReplicaCount"] == bounds["max_replicas"]
            assert so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == behavior
            (trigger,) = so["triggers"]
            assert trigger["type"] == "external-push"
            assert trigger["metadata"]["pool"] == name
            host, port = trigger["metadata"]["scalerAddress"].rsplit(":", 1)
            svc_name, svc_ns, _ = host.split(".", 2)
            assert svc_ns == NAMESPACE and int(port) == 9095
            svc = rendered.one("Service", svc_name)
            assert _service_targets(rendered, svc, rendered.gateway()) == {"keda": 9095}
        elif mode == "hpa":
            hpa = rendered.one("HorizontalPodAutoscaler", pool_name(name))["spec"]
            assert hpa["scaleTargetRef"] == target
            assert hpa["minReplicas"] == max(1, bounds["min_replicas"])
            assert hpa["maxReplicas"] == bounds["max_replicas"]
            assert hpa["behavior"] == behavior
            (metric,) = hpa["metrics"]
            assert metric["type"] == "External"
            assert metric["external"]["metric"] == {
                "name": "servegate_autoscaler_desired_replicas",
                "selector": {"matchLabels": {"pool": name}}}
            assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}


def test_rendered_servegate_config(rendered: Rendered) -> None:
    raw = rendered.config()
    cfg = parse_config(raw, "rendered servegate.yaml")  # the gateway's own validation
    assert set(cfg.pools) == set(rendered.values["pools"])
    assert set(cfg.models) == set(rendered.values["models"])
    for name, pool in cfg.pools.items():
        assert pool.endpoints == []
        d = pool.discovery
        assert (d.type, d.service, d.namespace) == ("kubernetes", pool_name(name), NAMESPACE)
        svc = rendered.one("Service", d.service)
        assert {d.http_port_name, d.grpc_port_name} <= {p["name"] for p in svc["spec"]["ports"]}
        assert pool.cold_start.enabled
    assert cfg.autoscaling is not None
    assert set(pool_specs(cfg)) == set(cfg.pools)  # the autoscaler's own reading
    for name, pool_as in cfg.autoscaling.pools.items():
        k8s = pool_as.kubernetes
        assert (k8s.deployment, k8s.namespace) == (pool_name(name), NAMESPACE)
        rendered.one("Deployment", k8s.deployment)
        assert pool_as.min_replicas == rendered.values["pools"][name]["autoscaling"][
            "min_replicas"]
    # the sidecar reads its own gateway; the Redis URL (a secret) never enters the ConfigMap
    assert raw["autoscaling"]["signals"] == {"gateways": ["http://127.0.0.1:8000"]}


# --- monitoring --------------------------------------------------------------------------------

def test_service_monitors() -> None:
    values = matrix_values("hpa", False, 3)
    # offline rendering has no cluster: the CRD auto-detection finds nothing
    assert not render(values).kind("ServiceMonitor")
    values["metrics"] = {"serviceMonitor": {"enabled": True}}
    r = render(values)
    monitors = {m["metadata"]["name"]: m for m in r.kind("ServiceMonitor")}
    assert set(monitors) == {FULLNAME, f"{FULLNAME}-triton"}
    for m in monitors.values():
        validate_manifest(m)
        selected = [s for s in r.kind("Service")
                    if labels_match(m["spec"]["selector"]["matchLabels"],
                                    s["metadata"]["labels"])]
        assert selected, m["metadata"]["name"]
        for s in selected:
            port_names = {p["name"] for p in s["spec"]["ports"]}
            assert {e["port"] for e in m["spec"]["endpoints"]} <= port_names
    gw_selected = [s["metadata"]["name"] for s in r.kind("Service")
                   if labels_match(monitors[FULLNAME]["spec"]["selector"]["matchLabels"],
                                   s["metadata"]["labels"])]
    assert gw_selected == [f"{FULLNAME}-metrics"]


def test_grafana_dashboard_configmap(rendered: Rendered) -> None:
    cm = rendered.one("ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((REPO / "deploy" / "grafana" / "servegate.json").read_text())
    assert json.loads(cm["data"]["servegate.json"]) == shipped


# --- NOTES -------------------------------------------------------------------------------------

def test_notes_show_a_first_request(rendered: Rendered) -> None:
    notes = rendered.notes()
    assert f"kubectl -n {NAMESPACE} port-forward svc/{FULLNAME} 8000:8000" in notes
    assert "curl -s localhost:8000/v2/models/" in notes
    assert re.search(r"/v2/models/\w+/infer", notes)
    assert "tritonclient.http" in notes and "tritonclient.grpc" in notes
    assert ("WARNING" in notes) == (not rendered.values.get("redis"))


# --- values.schema.json and template errors ----------------------------------------------------

def _with(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    values = copy.deepcopy(base if base is not None else matrix_values("keda", False, 1))
    node = values
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return values


BAD_VALUES = [
    ("scaling.mode", "knative", "at '/scaling/mode': value must be one of 'keda', 'hpa', "
                                "'direct'"),
    ("redis.url", "redis://:secret@redis:6379/0", "at '/redis': additional properties 'url' "
                                                   "not allowed"),
    ("redis.enabled", True, "at '/redis/existingSecret': minLength: got 0, want 1"),
    ("pools.GPU_1", POOLS["gpu"], "invalid propertyName 'GPU_1'\n  - at '': 'GPU_1' does not "
                                  "match pattern '^[a-z0-9]([-a-z0-9]{0,22}[a-z0-9])?$'"),
    ("pools.gpu.gpu", {"resource": "nvidia.com/gpu", "count": -1},
     "at '/pools/gpu/gpu/count': minimum: got -1, want 0"),
    ("pools.gpu.gpu", {"resource": "gpu", "count": 1}, "at '/pools/gpu/gpu/resource'"),
    ("gateway.securityContext", {"runAsUser": 0, "runAsGroup": 0, "fsGroup": 0},
     "at '/gateway/securityContext/runAsUser': minimum: got 0, want 1"),
    ("models.bert", {"version": 2}, "at '/models/bert': missing property 'pool'"),
    ("adminToken.token", "hunter2", "at '/adminToken': additional properties 'token' not "
                                    "allowed"),
    ("replicaCount", 3, "additional properties 'replicaCount' not allowed"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_VALUES,
                         ids=[p for p, _, _ in BAD_VALUES])
def test_schema_rejects_bad_values(path: str, value: Any, message: str) -> None:
    values = _with(path, value)
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError) as schema_err:
            chart.validate_schema(values)
        with pytest.raises(helm.HelmValuesError) as render_err:
            chart.render(values, name="sg", namespace=NAMESPACE)
    assert message in str(schema_err.value), str(schema_err.value)
    assert message in str(render_err.value)


@pytest.mark.parametrize(("values", "message"), [
    (_with("models.bert", {"pool": "tpu"}),
     "models.bert.pool: unknown pool \"tpu\" (pools: gpu)"),
    (_with("models.classifier.versions", {"2": {"pool": "canary"}}),
     "models.classifier.versions.2.pool: unknown pool \"canary\" (pools: gpu)"),
    (_with("pools.gpu.modelRepository", {"uri": ""}),
     "pools.gpu.modelRepository.uri is required"),
    (_with("gateway.terminationGracePeriodSeconds", 10),
     "gateway.terminationGracePeriodSeconds must exceed"),
    (_with("auth", {"enabled": True}), "auth.existingSecret is required"),
], ids=["unknown-pool", "unknown-version-pool", "no-model-repository", "short-grace",
        "auth-without-secret"])
def test_template_errors_name_the_key(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError) as err:
        chart.render(values, name="sg", namespace=NAMESPACE)
    assert message in str(err.value)


def test_values_schema_is_draft7_and_accepts_the_shipped_values() -> None:
    """Draft-07 (what Helm 3's and Helm 4's validators both read), checked by a second
    implementation too: the defaults and every example pass, a typo does not."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    validator.validate(defaults)
    with helm.Chart.load(CHART) as chart:
        for example in EXAMPLES:
            validator.validate(chart.merge_values(yaml.safe_load(example.read_text())))
    assert not validator.is_valid({**defaults, "gatway": {}})


def test_api_keys_and_tenants_render_into_config_and_a_secret_mount() -> None:
    values = matrix_values("keda", False, 1)
    values["auth"] = {"enabled": True, "existingSecret": "servegate-api-keys"}
    values["tenants"] = {"acme": {"models": ["*"], "priority": "critical",
                                  "requests_per_s": 50}}
    values["priorities"] = {"critical": 1}
    first_pool = next(iter(values["pools"]))
    values["pools"][first_pool]["shedding"] = {"sheddable_at": 4}
    r = render(values)
    cfg = parse_config(r.config(), "rendered servegate.yaml")
    assert cfg.auth is not None and cfg.auth.header == "authorization"
    assert cfg.tenants["acme"].requests_per_s == 50
    assert cfg.pools[first_pool].shedding.sheddable_at == 4
    gw = r.container(r.gateway(), "gateway")
    assert "--api-keys-file=/etc/servegate-keys/keys.yaml" in gw["args"]
    assert {"name": "api-keys", "mountPath": "/etc/servegate-keys",
            "readOnly": True} in gw["volumeMounts"]
    volumes = r.gateway()["spec"]["template"]["spec"]["volumes"]
    assert {"name": "api-keys", "secret": {"secretName": "servegate-api-keys"}} in volumes
    # off by default: no keys file, no auth section
    plain = render(matrix_values("keda", False, 1))
    assert "auth" not in plain.config()
    assert not any(a.startswith("--api-keys-file")
                   for a in plain.container(plain.gateway(), "gateway")["args"])
