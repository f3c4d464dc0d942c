"""deploy/kserve: every manifest checked against a schema, and the TorchServe-runtime storage layout served for real.

Core kinds go through kubernetes-validate (strict: unknown fields are errors). InferenceServices are walked
against the OpenAPI types of KServe's published Python client (generated from the CRD's schema, shipped in
the `kserve` package) and, for the pod fields inside, the Kubernetes client's: an unknown field or a value of
the wrong type fails. Then what a platform team checks: least privilege of every predictor pod, writable paths
only in emptyDirs, disruption budgets and spread, who may reach the pods, autoscaling targets from the measured
files, the canary. No cluster runs here: what a controller would do with them is not tested."""

from __future__ import annotations

import copy
import csv
import json
import re
import subprocess
import time
import zipfile
from pathlib import Path

import kubernetes_validate
import pytest
import requests
import yaml

from export.kserve_storage import stage
from harness.torchserve import TorchServe, torchserve_bin
from tests.deploy.render import documents, inference_services, predictor_deployment, selects

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kserve"
KUBERNETES_VERSION = "1.33"
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}


def schema_errors(value, type_name: str, path: str) -> list[str]:
    """Fields of `value` that the generated client's type `type_name` does not have, or of the wrong type."""
    import kserve.models
    import kubernetes.client.models

    if type_name.lower().startswith("list["):  # kserve writes list[X], the Kubernetes client List[X]
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [error for i, item in enumerate(value) for error in schema_errors(item, type_name[5:-1], f"{path}[{i}]")]
    if type_name.lower().startswith(("dict(", "dict[")):  # dict(str, X) / Dict[str, X]
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        return [error for key, item in value.items() for error in schema_errors(item, inner, f"{path}.{key}")]
    if type_name in PRIMITIVES:
        return [] if isinstance(value, PRIMITIVES[type_name]) else [f"{path}: expected {type_name}, got {type(value).__name__}"]
    if type_name in ("ResourceQuantity", "V1beta1MetricQuantity"):  # a Kubernetes quantity: "2", "3Gi", 2
        return [] if isinstance(value, (str, int, float)) else [f"{path}: expected a quantity"]
    model = getattr(kserve.models, type_name, None) or getattr(kubernetes.client.models, type_name, None)
    if model is None:
        return [f"{path}: no schema type {type_name}"]
    if not isinstance(value, dict):
        return [f"{path}: expected an object ({type_name})"]
    by_json_name = {json_name: attribute for attribute, json_name in model.attribute_map.items()}
    errors = []
    for key, item in value.items():
        if key not in by_json_name:
            errors.append(f"{path}.{key}: not a field of {type_name}")
        else:
            errors += schema_errors(item, model.openapi_types[by_json_name[key]], f"{path}.{key}")
    return errors


@pytest.mark.parametrize("name, doc", documents(), ids=[name for name, _ in documents()])
def test_manifest_matches_its_schema(name, doc):
    if doc["apiVersion"].startswith("serving.kserve.io/"):
        assert doc["kind"] == "InferenceService"
        assert schema_errors(doc, "V1beta1InferenceService", doc["kind"]) == []
        predictor = doc["spec"]["predictor"]
        limits = [container["resources"]["limits"] for container in predictor.get("containers", [])] or [predictor["model"]["resources"]["limits"]]
        assert all("cpu" in limit and "memory" in limit for limit in limits), "every predictor sets its CPU and memory limits"
        assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_walk_catches_mistakes():
    doc = dict(documents()[0][1])
    broken = yaml.safe_load(yaml.safe_dump(doc).replace("minReplicas", "minReplica"))
    assert any("minReplica: not a field" in error for error in schema_errors(broken, "V1beta1InferenceService", "x"))
    typed = yaml.safe_load(yaml.safe_dump(doc))
    typed["spec"]["predictor"]["maxReplicas"] = "four"
    assert any("maxReplicas: expected int" in error for error in schema_errors(typed, "V1beta1InferenceService", "x"))


def test_custom_predictor_probes_point_at_the_servers_endpoints():
    for _, doc in documents():
        for container in doc.get("spec", {}).get("predictor", {}).get("containers", []):
            port = container["ports"][0]["containerPort"]
            assert str(port) in container["args"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["httpGet"]["port"] == port
                assert re.fullmatch(r"/v2/(health/live|models/bert_trt/ready)", container[probe]["httpGet"]["path"])


@pytest.mark.integration
def test_torchserve_runtime_storage_layout_serves_kserve_v1_bodies(tiny_model_store, tmp_path, reference_classifier):
    """What KServe's TorchServe runtime runs in its pod: TorchServe on <storage>/config/config.properties and
    <storage>/model-store, the model registered by model_snapshot, KServe v1 bodies unwrapped by the envelope."""
    storage = tmp_path / "storage"
    config = stage(tiny_model_store / "bert_trt.mar", storage)
    assert zipfile.ZipFile(storage / "model-store" / "bert_trt.mar").namelist()
    server = TorchServe(workdir=tmp_path / "ts", model_store=storage / "model-store", models=None, config_template=config)
    server.log_dir.mkdir(parents=True, exist_ok=True)
    # token authorization is off in this config (no key file): started as KServe's runtime starts it, not by the harness
    command = [torchserve_bin(), "--start", "--ncs", "--ts-config", str(server.write_config()), "--model-store", str(storage / "model-store")]
    subprocess.run(command, cwd=server.workdir, env=server.env(), check=True, stdout=subprocess.DEVNULL)
    try:
        url = f"{server.inference_url}/predictions/bert_trt"
        texts = ["what a wonderful little hotel", "the package never arrived"]
        deadline = time.monotonic() + 180
        while True:
            try:
                response = requests.post(url, json={"instances": [texts[0], {"text": texts[1]}]}, timeout=30)
                if response.status_code == 200 or time.monotonic() > deadline:
                    break
            except requests.ConnectionError:  # the frontend is not listening yet
                assert time.monotonic() < deadline, "TorchServe never listened"
            time.sleep(1)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        expected = reference_classifier.classify(texts)
        assert [p["label"] for p in predictions] == [p["label"] for p in expected]
        assert max(abs(p["score"] - e["score"]) for p, e in zip(predictions, expected)) <= 1e-4
    finally:
        if server.stop():
            server.kill()


def test_the_gpu_predictor_runs_8_server_processes_with_a_core_and_more_each():
    """docs/kserve.md: the GPU manifest runs `--workers 8` (one Python process cannot feed a GPU)."""
    (gpu,) = [doc for _, doc in documents() if doc.get("metadata", {}).get("name") == "bert-trt-gpu"]
    container = gpu["spec"]["predictor"]["containers"][0]
    args = container["args"]
    assert args[args.index("--workers") + 1] == "8" and "--gpu-id" in args
    assert int(container["resources"]["requests"]["cpu"]) >= 8 + 2  # a core per worker, and room for batching threads


CONTAINER_SECURITY = {"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True, "readOnlyRootFilesystem": True,
                      "allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]},
                      "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
POD_SECURITY = {"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
ISVC_NAMES = [isvc["metadata"]["name"] + ("@canary" if "canaryTrafficPercent" in isvc["spec"]["predictor"] else "") for isvc in inference_services()]


@pytest.mark.parametrize("isvc", inference_services(), ids=ISVC_NAMES)
def test_every_predictor_pod_runs_least_privileged(isvc):
    """uid/gid 10001, non-root, read-only root filesystem, no capabilities, no privilege escalation, the runtime's
    seccomp profile, no service account token, nothing from the host; every volume an emptyDir (with a size
    limit) or KServe's read-only model claim, and every emptyDir mounted."""
    pod = predictor_deployment(isvc)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == POD_SECURITY
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    for container in pod["containers"]:
        assert container["securityContext"] == CONTAINER_SECURITY, container["name"]
    mounted = {mount["name"]: mount for container in pod["containers"] for mount in container.get("volumeMounts", [])}
    for volume in pod["volumes"]:
        if "emptyDir" in volume:
            assert volume["emptyDir"].get("sizeLimit"), f"{volume['name']}: give the emptyDir a sizeLimit (a full disk evicts the pod, not its neighbours)"
            assert volume["name"] in mounted, f"emptyDir {volume['name']} is mounted nowhere"
        else:
            assert volume.get("persistentVolumeClaim", {}).get("readOnly") and mounted[volume["name"]].get("readOnly"), volume


def entrypoint_unpack_dir(dockerfile: Path) -> str:
    """The --unpack-dir the image's ENTRYPOINT passes to kserve_server."""
    entrypoint = next(json.loads(line.split(" ", 1)[1]) for line in dockerfile.read_text().splitlines() if line.startswith("ENTRYPOINT"))
    return entrypoint[entrypoint.index("--unpack-dir") + 1]


@pytest.mark.parametrize("isvc", [isvc for isvc in inference_services() if "containers" in isvc["spec"]["predictor"]], ids=lambda isvc: isvc["metadata"]["name"])
def test_custom_predictor_emptydirs_cover_where_the_kserve_server_writes(isvc):
    """/tmp (tempfile: the workers' metrics folder) and the archive's unpack folder named by the image's entrypoint."""
    dockerfile = REPO / "docker" / ("Dockerfile.kserve-gpu" if "--gpu-id" in isvc["spec"]["predictor"]["containers"][0]["args"] else "Dockerfile.kserve")
    mounts = {mount["mountPath"] for mount in isvc["spec"]["predictor"]["containers"][0]["volumeMounts"]}
    assert {"/tmp", entrypoint_unpack_dir(dockerfile)} <= mounts


@pytest.mark.parametrize("isvc", inference_services(), ids=ISVC_NAMES)
def test_every_predictor_has_a_disruption_budget_and_spreads_over_nodes_and_zones(isvc):
    name = isvc["metadata"]["name"]
    labels = predictor_deployment(isvc)["spec"]["template"]["metadata"]["labels"]
    budgets = [doc for _, doc in documents() if doc["kind"] == "PodDisruptionBudget" and selects(doc["spec"]["selector"], labels)]
    assert len(budgets) == 1 and budgets[0]["spec"]["maxUnavailable"] == 1, f"{name}: one PodDisruptionBudget (pdb.yaml) must select its pods"
    assert budgets[0]["metadata"]["namespace"] == isvc["metadata"]["namespace"]
    spread = isvc["spec"]["predictor"]["topologySpreadConstraints"]
    assert {constraint["topologyKey"] for constraint in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert all(selects(constraint["labelSelector"], labels) and constraint["maxSkew"] == 1 for constraint in spread)
    # two replicas at least, so that a drain keeps one serving; the GPU one may run one (a comment says why)
    assert isvc["spec"]["predictor"]["minReplicas"] >= (1 if name == "bert-trt-gpu" else 2)


SERVING_PATH_NAMESPACES = {"istio-system", "knative-serving"}
METRICS_NAMESPACES = {"monitoring"}


def ingress_rules_for(labels: dict, namespace: str) -> list[dict]:
    """The ingress rules of every NetworkPolicy of `namespace` that selects pods labelled `labels`."""
    policies = [doc for _, doc in documents() if doc["kind"] == "NetworkPolicy" and doc["metadata"]["namespace"] == namespace]
    return [rule for policy in policies if selects(policy["spec"]["podSelector"], labels) for rule in policy["spec"].get("ingress", [])]


def test_the_namespace_denies_all_ingress_by_default_and_enforces_the_restricted_pod_standard():
    (deny,) = [doc for _, doc in documents() if doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"] == "default-deny-ingress"]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    (namespace,) = [doc for _, doc in documents() if doc["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {doc["metadata"].get("namespace") for _, doc in documents() if doc["kind"] != "Namespace"} == {namespace["metadata"]["name"]}


@pytest.mark.parametrize("isvc", inference_services(), ids=ISVC_NAMES)
def test_only_the_serving_path_and_the_metrics_scraper_reach_the_predictor(isvc):
    """Every rule that selects the pods allows named namespaces only (no ipBlock, no pod selector, no "from
    anywhere"), each on specific ports: the serving path on the serving ports, the scraper on the metrics port."""
    deployment = predictor_deployment(isvc)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    rules = ingress_rules_for(labels, isvc["metadata"]["namespace"])
    assert rules, f"no NetworkPolicy allows traffic to {isvc['metadata']['name']}"
    allowed: dict[str, set[int]] = {}
    for rule in rules:
        assert rule.get("from") and rule.get("ports"), f"a rule without from / ports opens the pods to everyone: {rule}"
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"}, f"only whole namespaces are allowed, not {peer}"
            namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            allowed.setdefault(namespace, set()).update(port["port"] for port in rule["ports"])
    assert set(allowed) <= SERVING_PATH_NAMESPACES | METRICS_NAMESPACES
    serverless = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    serving = {8012} if serverless else {port["containerPort"] for port in deployment["spec"]["template"]["spec"]["containers"][0].get("ports", [])} or {8080}
    assert set().union(*(allowed[namespace] for namespace in allowed if namespace in SERVING_PATH_NAMESPACES)) - {9090} == serving
    metrics = allowed["monitoring"]
    if "model" in isvc["spec"]["predictor"]:  # TorchServe: only its metrics; its inference (8085) and management stay in the pod
        assert metrics == {8082}
    else:
        assert metrics == ({9091, 9088} if serverless else {8080})


def measured_levels(path: Path, config_column: str, config: str, extra: dict | None = None) -> dict[int, list[float]]:
    """Requests/s per concurrency level (one value per round) of one target in a load-test CSV."""
    levels: dict[int, list[float]] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            if row[config_column] == config and all(row[key] == value for key, value in (extra or {}).items()):
                levels.setdefault(int(row["concurrency"]), []).append(float(row["throughput_rps"]))
    return levels


def saturation_concurrency(levels: dict[int, list[float]]) -> int:
    """The smallest concurrency whose best round is no worse than some round of a higher level: past it, more
    requests in flight bring no throughput the rounds' spread can tell apart (only latency). The highest
    level when throughput still rose at every step (no knee measured)."""
    ordered = sorted(levels)
    for i, level in enumerate(ordered[:-1]):
        if max(levels[level]) >= min(min(levels[higher]) for higher in ordered[i + 1 :]):
            return level
    return ordered[-1]


def test_autoscaling_targets_are_the_measured_concurrency_per_replica():
    """Raw deployments scale (KEDA) on the in-flight gauge, Serverless ones (Knative) on concurrency, with the
    per-replica figure of the cited measurements: the KServe door on 2 cores (bench peer comparison) and
    `--workers 8` on an H200 (host-path sweep). The TorchServe runtime stays on CPU (no in-flight gauge)."""
    cpu = saturation_concurrency(measured_levels(REPO / "bench/results/cpu_2core/peer_comparison.csv", "config", "kserve"))
    gpu = saturation_concurrency(measured_levels(REPO / "bench/results/h200_host_path/host_path.csv", "stage", "kserve", {"workers": "8"}))
    assert (cpu, gpu) == (8, 768)
    by_name = {isvc["metadata"]["name"]: isvc for isvc in inference_services()}
    for name, target in (("bert-trt", cpu), ("bert-trt-gpu", gpu)):
        isvc = by_name[name]
        assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
        (metric,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
        assert metric["type"] == "External" and metric["external"]["target"] == {"type": "Value", "value": str(target)}
        query = metric["external"]["metric"]["query"]
        assert query.startswith("sum(bert_trt_in_flight_requests{") and f'pod=~"{name}-predictor-.*"' in query
        limits = isvc["spec"]["predictor"]["containers"][0]["resources"]["limits"]
        assert limits["cpu"] == ("2" if name == "bert-trt" else "12")  # the measured replica's size
    for isvc in inference_services():
        if isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless":
            assert (isvc["spec"]["predictor"]["scaleMetric"], isvc["spec"]["predictor"]["scaleTarget"]) == ("concurrency", cpu)
    torchserve = by_name["bert-trt-torchserve"]["metadata"]["annotations"]
    assert (torchserve["serving.kserve.io/autoscalerClass"], torchserve["serving.kserve.io/metric"]) == ("hpa", "cpu")


def test_the_in_flight_gauge_the_autoscaler_queries_is_the_one_the_server_exports():
    from prometheus_client import CollectorRegistry, generate_latest

    from kserve_server.metrics import PrometheusMetrics

    registry = CollectorRegistry()
    PrometheusMetrics("bert_trt", registry)
    exported = generate_latest(registry).decode()
    assert "# TYPE bert_trt_in_flight_requests gauge" in exported and 'bert_trt_in_flight_requests{model="bert_trt"} 0.0' in exported


def test_the_canary_is_the_serverless_service_with_a_new_image_and_a_traffic_split():
    """canary.yaml changes the image and adds canaryTrafficPercent, nothing else: the candidate revision keeps
    every hardening, probe and autoscaling setting of the one it replaces."""
    (stable,) = [doc for name, doc in documents() if name.startswith("custom-predictor-serverless.yaml")]
    (canary,) = [doc for name, doc in documents() if name.startswith("canary.yaml")]
    stable_predictor, canary_predictor = copy.deepcopy(stable["spec"]["predictor"]), copy.deepcopy(canary["spec"]["predictor"])
    percent = canary_predictor.pop("canaryTrafficPercent")
    assert 0 < percent < 100
    stable_image, canary_image = stable_predictor["containers"][0].pop("image"), canary_predictor["containers"][0].pop("image")
    assert canary_image != stable_image and canary_image.rsplit(":", 1)[0] == stable_image.rsplit(":", 1)[0]
    assert canary_predictor == stable_predictor and canary["metadata"] == stable["metadata"]
    assert stable["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"  # canaryTrafficPercent needs Knative revisions
