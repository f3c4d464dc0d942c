"""The KServe front door over real HTTP: `python -m kserve_server` on a free loopback port with the tests' .mar.

v1 and v2 answers equal the in-process reference (and TorchServe's answer format), bad inputs get the
handler's 4xx JSON, health and readiness hold before and after load, concurrent requests share batches."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness.kserve import running_kserve

pytestmark = pytest.mark.integration

TEXTS = ["what a wonderful little hotel", "the package never arrived and nobody answers", "it is a chair", "word " * 400]


@pytest.fixture(scope="module")
def kserve(tiny_model_store, tmp_path_factory):
    """The KServe server on the tests' archive; yields (base URL, log file)."""
    with running_kserve(tiny_model_store / "bert_trt.mar", tmp_path_factory.mktemp("kserve")) as server:
        yield server.http_url, server.log


def v2_body(texts: list) -> dict:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


def test_v1_answers_like_the_in_process_reference(kserve, reference_classifier):
    url, _ = kserve
    response = requests.post(f"{url}/v1/models/bert_trt:predict", json={"instances": [TEXTS[0], {"text": TEXTS[1]}, TEXTS[2], TEXTS[3]]}, timeout=60)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = reference_classifier.classify(TEXTS)
    for got, want in zip(predictions, expected):
        assert got["label"] == want["label"] and set(got) == {"label", "score", "probabilities", "truncated", "tokens", "backend"}
        assert max(abs(got["probabilities"][label] - p) for label, p in want["probabilities"].items()) <= 1e-4
    assert [p["truncated"] for p in predictions] == [False, False, False, True]
    assert predictions[0]["backend"] == "onnxruntime"


def test_v2_is_a_complete_classification(kserve, reference_classifier):
    url, _ = kserve
    response = requests.post(f"{url}/v2/models/bert_trt/infer", json={"id": "req-7", **v2_body(TEXTS)}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-7" and body["model_name"] == "bert_trt"
    outputs = {output["name"]: output for output in body["outputs"]}
    labels = json.loads(outputs["probabilities"]["parameters"]["labels"])
    assert outputs["probabilities"]["shape"] == [len(TEXTS), len(labels)]
    expected = reference_classifier.classify(TEXTS)
    rows = [outputs["probabilities"]["data"][i * len(labels) : (i + 1) * len(labels)] for i in range(len(TEXTS))]
    for i, want in enumerate(expected):
        assert outputs["label"]["data"][i] == want["label"]
        assert max(abs(p - want["probabilities"][label]) for label, p in zip(labels, rows[i])) <= 1e-4
        assert abs(outputs["score"]["data"][i] - want["score"]) <= 1e-4
    assert outputs["truncated"]["data"] == [False, False, False, True]


def test_metadata_and_health(kserve):
    url, _ = kserve
    assert requests.get(f"{url}/v2/health/live", timeout=10).status_code == 200
    assert requests.get(f"{url}/v2/models/bert_trt/ready", timeout=10).json()["ready"] is True
    assert requests.get(f"{url}/v1/models/bert_trt", timeout=10).json() == {"name": "bert_trt", "ready": True}
    metadata = requests.get(f"{url}/v2/models/bert_trt", timeout=10).json()
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [output["name"] for output in metadata["outputs"]] == ["label", "score", "probabilities", "truncated", "tokens"]


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/v1/models/bert_trt:predict", {"instances": []}, 400, "empty list"),
        ("/v1/models/bert_trt:predict", {"instances": ["fine", 7]}, 400, "text at index 1 must be a string"),
        ("/v1/models/bert_trt:predict", {"instances": ["x"] * 300}, 413, "too many texts"),
        ("/v1/models/bert_trt:predict", {"texts": ["x"]}, 400, '{"instances": [...]}'),
        ("/v2/models/bert_trt/infer", {"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}, 400, 'one input named "text"'),
        ("/v2/models/bert_trt/infer", v2_body(["  "]), 400, "text at index 0 is empty"),
    ],
)
def test_bad_requests_get_the_handlers_4xx_json(kserve, path, body, status, message):
    url, _ = kserve
    response = requests.post(f"{url}{path}", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["code"] == status and message in response.json()["error"]


def test_concurrent_requests_share_batches_and_health_holds_after_load(kserve, reference_classifier):
    url, log = kserve
    texts = [f"review number {i}: {'good' if i % 2 else 'bad'} product" for i in range(48)]
    before = log.read_text()
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda text: requests.post(f"{url}/v1/models/bert_trt:predict", json={"instances": [text]}, timeout=60), texts))
    assert [r.status_code for r in responses] == [200] * len(texts)
    expected = reference_classifier.classify(texts)
    assert [r.json()["predictions"][0]["label"] for r in responses] == [p["label"] for p in expected]
    batches = [int(n) for n in re.findall(r"batch: \d+ requests, (\d+) texts", log.read_text()[len(before) :])]
    assert sum(batches) == len(texts) and max(batches) > 1, batches
    assert requests.get(f"{url}/v2/health/ready", timeout=10).status_code == 200


def test_metrics_endpoint_has_the_services_batch_figures(kserve):
    url, _ = kserve
    assert requests.post(f"{url}/v1/models/bert_trt:predict", json={"instances": ["one text", "and another"]}, timeout=60).status_code == 200
    assert requests.post(f"{url}/v1/models/bert_trt:predict", json={"instances": [{"text": "x", "top_k": 0}]}, timeout=60).status_code == 400
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    labels = 'backend="onnxruntime",model="bert_trt"'
    assert f"bert_trt_active_backend{{{labels}}} 1.0" in metrics
    value = lambda name: float(re.search(rf"^{name}{{{labels}}} (\S+)$", metrics, re.M).group(1))  # noqa: E731
    assert value("bert_trt_batch_texts_count") >= 1 and value("bert_trt_batch_texts_sum") >= 2
    assert value("bert_trt_batch_tokens_sum") > value("bert_trt_batch_texts_sum")
    assert value("bert_trt_rejected_requests_total") >= 1
    for stage in ("tokenize", "infer", "total"):
        assert f'bert_trt_stage_ms_count{{{labels},stage="{stage}"}}' in metrics


def test_a_v1_body_that_is_not_json_gets_the_400_json_error_and_the_server_keeps_answering(kserve):
    url, _ = kserve
    response = requests.post(f"{url}/v1/models/bert_trt:predict", data=b'{"instances": [', headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    assert response.json()["code"] == 400 and "request body is not valid JSON" in response.json()["error"]
    assert requests.post(f"{url}/v1/models/bert_trt:predict", json={"instances": ["still here"]}, timeout=60).status_code == 200
