"""The handler driven in-process the way a TorchServe worker drives it (real ts Context)."""

import json

import pytest

from harness.inprocess import handle_batch, started_handler
from harness.models import LABELS, model_dir_like_mar


@pytest.fixture(scope="module")
def handler_and_context(tiny_checkpoint, tiny_export, tmp_path_factory):
    model_dir = model_dir_like_mar(tiny_checkpoint, tiny_export, tmp_path_factory.mktemp("worker"))
    return started_handler(model_dir, model_yaml={"minWorkers": 1, "handler": {"backend": "auto", "onnx_int8": False}})  # fp32: compared to 1e-4


def test_one_answer_per_request_in_order(handler_and_context, cpu_reference):
    handler, context = handler_and_context
    texts = ["great product, love it", "awful", "it arrived on monday", "the best thing ever made"]
    responses, statuses = handle_batch(handler, context, [t.encode() for t in texts])
    expected = cpu_reference.classify(texts)
    assert [r["label"] for r in responses] == [e["label"] for e in expected]
    for got, want in zip(responses, expected):  # onnxruntime fp32 vs torch fp32
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-4)
    assert all(status == (200, None) for status in statuses)


def test_response_schema(handler_and_context):
    handler, context = handler_and_context
    (response,), _ = handle_batch(handler, context, [b"hello"])
    assert set(response) == {"label", "score", "probabilities", "truncated", "tokens", "backend"}
    assert response["truncated"] is False and response["tokens"] == 3  # [CLS] hello [SEP]
    assert response["backend"] == "onnxruntime"  # no GPU in tests; the ONNX file is there
    assert list(response["probabilities"]) == LABELS
    assert response["score"] == max(response["probabilities"].values())
    assert sum(response["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_list_request_answered_with_list_in_order(handler_and_context, cpu_reference):
    handler, context = handler_and_context
    texts = ["one", "two words", "three words here"]
    responses, _ = handle_batch(handler, context, [json.dumps(texts), "single"])
    assert isinstance(responses[0], list) and len(responses[0]) == 3
    assert [r["label"] for r in responses[0]] == [e["label"] for e in cpu_reference.classify(texts)]
    assert isinstance(responses[1], dict)


def test_bad_request_gets_its_own_4xx_and_neighbours_succeed(handler_and_context):
    handler, context = handler_and_context
    payloads = [b"fine text", b"\xff\xfe", "", '{"nope": 1}', "also fine"]
    responses, statuses = handle_batch(handler, context, payloads)
    assert [code for code, _ in statuses] == [200, 400, 400, 400, 200]
    assert "UTF-8" in responses[1]["error"] and responses[1]["code"] == 400
    assert "label" in responses[0] and "label" in responses[4]


def test_batch_of_only_bad_requests(handler_and_context):
    handler, context = handler_and_context
    responses, statuses = handle_batch(handler, context, [b"", b"[]"])
    assert [code for code, _ in statuses] == [400, 400]
    assert all("error" in r for r in responses)


def test_long_text_is_truncated_not_rejected(handler_and_context):
    handler, context = handler_and_context
    (response,), ((code, _),) = handle_batch(handler, context, ["word " * 5000])
    assert code == 200 and response["label"] in LABELS and response["truncated"] is True
    _, timings = handler.classifier.run(["word " * 5000])
    assert timings.tokens <= handler.classifier.max_length


def test_megabyte_text_is_cut_before_tokenizing_and_keeps_its_first_tokens(handler_and_context):
    handler, context = handler_and_context
    classifier = handler.classifier
    opening = "the staff were lovely and the room was spotless " * 40
    encoded = classifier.encode([opening + "x" * 1_000_000, opening])
    assert encoded.truncated == [True, True]
    assert encoded.input_ids[0] == encoded.input_ids[1] and len(encoded.input_ids[0]) == classifier.max_length
    (response,), ((code, _),) = handle_batch(handler, context, [opening + "x" * 1_000_000])
    assert code == 200 and response["truncated"] is True
