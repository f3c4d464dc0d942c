"""deploy/kserve/'s manifests read, and each InferenceService's predictor rendered as the Deployment KServe would make.

The rendering is ours, not KServe's controller: the predictor's pod fields become the pod template; its
component fields (replicas, autoscaling, canary) are dropped; a `model:` predictor becomes the runtime's
container (KServe's kserve-torchserve ClusterServingRuntime as published, config/runtimes/kserve-torchserve.yaml)
with the model's fields merged over it, plus the PVC mount KServe adds for a pvc:// storageUri. Not rendered:
what a cluster adds at admission (Knative's queue-proxy, an Istio sidecar). Used by the manifest and policy tests.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kserve"
#: the labels KServe puts on every predictor pod
POD_LABEL = "serving.kserve.io/inferenceservice"
#: predictor fields that configure KServe or Knative, not the pod
COMPONENT_FIELDS = ("minReplicas", "maxReplicas", "scaleMetric", "scaleMetricType", "scaleTarget", "autoScaling", "canaryTrafficPercent",
                    "containerConcurrency", "timeout", "batcher", "logger", "annotations", "labels", "deploymentStrategy", "model",
                    "storageUris", "workerSpec")  # fmt: skip
#: model fields that choose a runtime, not container fields
MODEL_FIELDS = ("modelFormat", "protocolVersion", "runtime", "runtimeVersion", "storageUri", "storage")
#: KServe's kserve-torchserve runtime container (kserve/kserve config/runtimes/kserve-torchserve.yaml; its image
#: placeholder kserve-torchserve:replace is pytorch/torchserve-kfs, named here at this project's TorchServe version)
TORCHSERVE_RUNTIME_CONTAINER = {
    "name": "kserve-container",
    "image": "pytorch/torchserve-kfs:0.12.0",
    "args": ["torchserve", "--start", "--model-store=/mnt/models/model-store", "--ts-config=/mnt/models/config/config.properties"],
    "env": [{"name": "TS_SERVICE_ENVELOPE", "value": "{{.Labels.serviceEnvelope}}"}],
    "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]}},  # fmt: skip
    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
}


def documents() -> list[tuple[str, dict]]:
    """("file#index", document) of every YAML document in deploy/kserve/."""
    return [(f"{path.name}#{i}", doc) for path in sorted(DEPLOY.glob("*.yaml")) for i, doc in enumerate(yaml.safe_load_all(path.read_text())) if doc]


def inference_services() -> list[dict]:
    """Every InferenceService in deploy/kserve/."""
    return [doc for _, doc in documents() if doc.get("kind") == "InferenceService"]


def merged(base, override):
    """`override` merged over `base`: mappings key by key, lists of named items by name, anything else replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        result = dict(base)
        for key, value in override.items():
            result[key] = merged(base[key], value) if key in base else value
        return result
    if isinstance(base, list) and isinstance(override, list) and all(isinstance(item, dict) and "name" in item for item in base + override):
        by_name = {item["name"]: item for item in base}
        by_name.update({item["name"]: merged(by_name.get(item["name"], {}), item) for item in override})
        return list(by_name.values())
    return override


def predictor_containers(predictor: dict) -> list[dict]:
    """The predictor's containers: its own, or for a `model:` predictor the runtime's with the model's fields over it."""
    if "containers" in predictor:
        return copy.deepcopy(predictor["containers"])
    model = predictor["model"]
    if model["modelFormat"]["name"] != "pytorch":
        raise ValueError(f"no runtime known here for model format {model['modelFormat']['name']}: add its container to {__name__}")
    container = merged(TORCHSERVE_RUNTIME_CONTAINER, {key: value for key, value in model.items() if key not in MODEL_FIELDS})
    if model.get("storageUri", "").startswith("pvc://"):  # KServe mounts the claim read-only at /mnt/models
        container["volumeMounts"] = [*container.get("volumeMounts", []), {"name": "kserve-pvc-source", "mountPath": "/mnt/models", "readOnly": True}]
    return [container]


def predictor_deployment(isvc: dict) -> dict:
    """The Deployment of one InferenceService's predictor (minReplicas replicas), as a plain apps/v1 manifest."""
    predictor = isvc["spec"]["predictor"]
    name = isvc["metadata"]["name"]
    labels = {POD_LABEL: name, "component": "predictor", **predictor.get("labels", {})}
    pod = {key: copy.deepcopy(value) for key, value in predictor.items() if key not in COMPONENT_FIELDS}
    pod["containers"] = predictor_containers(predictor)
    storage = predictor.get("model", {}).get("storageUri", "")
    if storage.startswith("pvc://"):
        claim = storage.removeprefix("pvc://").split("/", 1)[0]
        pod["volumes"] = [*pod.get("volumes", []), {"name": "kserve-pvc-source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}]
    template_metadata = {"labels": labels, **({"annotations": predictor["annotations"]} if "annotations" in predictor else {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{name}-predictor", "namespace": isvc["metadata"].get("namespace", "default"), "labels": labels},
        "spec": {"replicas": predictor["minReplicas"], "selector": {"matchLabels": labels}, "template": {"metadata": template_metadata, "spec": pod}},
    }


def selects(selector: dict, labels: dict) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions with In / NotIn / Exists) selects `labels`."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if (operator == "In" and labels.get(key) not in values) or (operator == "NotIn" and present and labels[key] in values):
            return False
        if (operator == "Exists" and not present) or (operator == "DoesNotExist" and present):
            return False
    return True
