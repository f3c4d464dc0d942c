"""deploy/kserve: every manifest checked against a schema, and the TorchServe-runtime storage layout served for real.

Core kinds go through kubernetes-validate (strict: unknown fields are errors). InferenceServices are walked
against the OpenAPI types of KServe's published Python client (generated from the CRD's schema, shipped in
the `kserve` package) and, for the pod fields inside, the Kubernetes client's: an unknown field or a value of
the wrong type fails. No cluster runs here: what a controller would do with them is not tested."""

from __future__ import annotations

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

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kserve"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))
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
    if type_name == "ResourceQuantity":  # a Kubernetes quantity: "2", "3Gi", 2
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


def documents() -> list[tuple[str, dict]]:
    return [(f"{path.name}#{i}", doc) for path in MANIFESTS for i, doc in enumerate(yaml.safe_load_all(path.read_text())) if doc]


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
    """README "KServe": the GPU manifest runs `--workers 8` (one Python process cannot feed a GPU)."""
    (gpu,) = [doc for _, doc in documents() if doc.get("metadata", {}).get("name") == "bert-trt-gpu"]
    container = gpu["spec"]["predictor"]["containers"][0]
    args = container["args"]
    assert args[args.index("--workers") + 1] == "8" and "--gpu-id" in args
    assert int(container["resources"]["requests"]["cpu"]) >= 8 + 2  # a core per worker, and room for batching threads
