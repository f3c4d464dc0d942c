"""A real TorchServe, started with the shipped config.properties and a .mar built by build_mar.py."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from handler import layout
from handler.backends.base import NO_GPU_ASSIGNED
from harness.torchserve import metric_values
from harness.models import LABELS

TEXTS = [f"review {i}: " + ("great value, would buy again " if i % 3 else "broken on arrival, refund please ") * (1 + i % 5) for i in range(32)]


def _post_all(server, payloads, workers=32):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(server.predict, payloads))


def _wait_for(predicate, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    return predicate()


def test_prediction_matches_in_process_reference(torchserve, reference_classifier):
    response = torchserve.predict("I love this phone, the battery is amazing")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = reference_classifier.classify(["I love this phone, the battery is amazing"])[0]
    assert body["label"] == expected["label"] and body["label"] in LABELS
    assert body["backend"] == reference_classifier.backend.name == "onnxruntime"
    assert abs(body["score"] - expected["score"]) < 1e-4


def test_mar_with_an_engine_falls_back_to_cpu_and_logs_why(torchserve, tiny_model_store):
    import zipfile

    names = zipfile.ZipFile(tiny_model_store / "bert_trt.mar").namelist()
    assert {layout.ENGINE_FILE, layout.ENGINE_SIDECAR_FILE, layout.INT8_ONNX_FILE, layout.SPEC_FILE, "handler/backends/tensorrt.py"} <= set(names)
    assert layout.ONNX_FILE not in names  # only the ONNX file the worker runs is packed
    assert torchserve.predict("which backend answers?").json()["backend"] == "onnxruntime"
    log = (torchserve.log_dir / "model_log.log").read_text(errors="replace")
    assert f"backend tensorrt skipped: {NO_GPU_ASSIGNED}" in log  # a CPU worker does not even import them
    assert f"backend torch_cuda skipped: {NO_GPU_ASSIGNED}" in log
    assert "bert_trt ready: {'backend': 'onnxruntime', 'model': 'model.int8.onnx'" in log
    assert [v for v in metric_values(torchserve.log_dir, "ActiveBackend")] , "ActiveBackend metric missing"


def test_json_object_and_list_payloads(torchserve, reference_classifier):
    single = torchserve.predict({"text": "not bad at all"})
    assert single.status_code == 200 and single.json()["label"] in LABELS
    listed = torchserve.predict(["first text", "second, longer text here", "third"])
    assert listed.status_code == 200
    labels = [item["label"] for item in listed.json()]
    assert labels == [p["label"] for p in reference_classifier.classify(["first text", "second, longer text here", "third"])]


def test_32_concurrent_requests_are_batched_and_all_correct(torchserve, reference_classifier):
    responses = _post_all(torchserve, TEXTS)
    assert [r.status_code for r in responses] == [200] * 32
    expected = reference_classifier.classify(TEXTS)
    assert [r.json()["label"] for r in responses] == [e["label"] for e in expected]
    for got, want in zip(responses, expected):
        assert abs(got.json()["score"] - want["score"]) < 1e-4
    batch_sizes = _wait_for(lambda: [v for v in metric_values(torchserve.log_dir, "BatchSize") if v > 1])
    assert batch_sizes, f"no batch larger than 1 in model_metrics.log:\n{torchserve.log_tail('model_metrics.log')}"
    for name in ("BatchTexts", "BatchTokens", "TokenizeMs", "InferMs", "HandlerMs"):  # the same figures the KServe door's /metrics has
        assert metric_values(torchserve.log_dir, name), f"{name} missing from model_metrics.log"


def test_bad_request_inside_a_concurrent_batch_gets_its_own_400(torchserve):
    payloads = [f"good text number {i}" for i in range(15)]
    payloads.insert(7, b"\xff\xfe not utf-8")
    before = set(w["pid"] for w in torchserve.describe("bert_trt")["workers"])
    responses = _post_all(torchserve, payloads, workers=16)
    codes = [r.status_code for r in responses]
    assert codes[7] == 400 and codes.count(200) == 15
    assert responses[7].json() == {"error": responses[7].json()["error"], "code": 400}
    assert "UTF-8" in responses[7].json()["error"]
    pattern = re.compile(r"batch: (\d+) requests, \d+ texts, (\d+) rejected")

    def mixed_batches():
        log = (torchserve.log_dir / "model_log.log").read_text(errors="replace")
        return [int(n) for n, rejected in pattern.findall(log) if int(rejected) >= 1 and int(n) > 1]

    assert _wait_for(mixed_batches), "the bad request was never in a batch with good ones"
    after = set(w["pid"] for w in torchserve.describe("bert_trt")["workers"])
    assert before == after, "the worker restarted after a bad request"
    assert torchserve.predict("still answering").status_code == 200


def test_scale_workers_up_and_down(torchserve):
    url = f"{torchserve.management_url}/models/bert_trt"
    headers = torchserve.headers("management")
    try:
        up = requests.put(f"{url}?min_worker=2&synchronous=true", headers=headers, timeout=180)
        assert up.status_code == 200, up.text
        assert _wait_for(lambda: torchserve.ready_workers("bert_trt") == 2, timeout=120)
        assert len(torchserve.describe("bert_trt")["workers"]) == 2
        assert torchserve.predict("scaled up").status_code == 200
    finally:
        down = requests.put(f"{url}?min_worker=1&max_worker=1&synchronous=true", headers=headers, timeout=180)
    assert down.status_code == 200, down.text
    assert _wait_for(lambda: len(torchserve.describe("bert_trt")["workers"]) == 1, timeout=60)


def test_token_is_enforced(torchserve):
    url = f"{torchserve.inference_url}/predictions/bert_trt"
    refusals = [
        requests.post(url, data=b"hi", timeout=10),
        requests.post(url, data=b"hi", headers={"Authorization": "Bearer wrong"}, timeout=10),
        requests.get(f"{torchserve.management_url}/models", timeout=10),
        requests.get(f"{torchserve.management_url}/models", headers=torchserve.headers("inference"), timeout=10),
    ]
    for refused in refusals:  # TorchServe 0.12 answers a missing or wrong token with 400
        assert refused.status_code in (400, 401), refused.text
        assert "token" in refused.text.lower()
    assert requests.get(f"{torchserve.management_url}/models", headers=torchserve.headers("management"), timeout=10).status_code == 200


def test_register_is_refused_while_model_api_is_off(torchserve):
    response = requests.post(
        f"{torchserve.management_url}/models?url=bert_trt.mar&model_name=another", headers=torchserve.headers("management"), timeout=30
    )
    assert response.status_code >= 400
    assert "model api" in json.dumps(response.json()).lower() or response.status_code == 405


def test_a_text_gets_the_same_answer_alone_and_inside_any_batch(torchserve):
    """Batch invariance of the shipped CPU path (calibrated int8): the same text, alone and batched with
    short and long neighbours by TorchServe, gets probabilities within 1e-4."""
    base = "the room was fine but the breakfast was cold and the staff seemed tired"
    alone = torchserve.predict(base).json()["probabilities"]
    neighbours = ["ok", "terrible " * 60, "great value, would buy again", "x", "a medium length sentence about a parcel"] * 3
    # the prediction cache remembers what it answered: each round sends texts it has not seen, `base` spelt
    # with the same tokens, so that every one of them is computed inside the batch
    for round_, text in enumerate([base + " ", " " + base, base + "\n"]):
        fresh = [f"{neighbour} {round_}-{index}" for index, neighbour in enumerate(neighbours)]
        payloads = fresh[round_:] + [text] + fresh[:round_]
        responses = _post_all(torchserve, payloads, workers=len(payloads))
        answer = responses[payloads.index(text)].json()["probabilities"]
        assert max(abs(answer[label] - alone[label]) for label in alone) <= 1e-4, (alone, answer)
    batch_sizes = [v for v in metric_values(torchserve.log_dir, "BatchSize") if v > 1]
    assert batch_sizes, "the text was never batched with others"
