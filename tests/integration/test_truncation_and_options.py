"""Truncation policies and response options over real HTTP: one TorchServe serving the tiny model under
tail, head+tail and chunks, and a multi-label model; every answer equals the in-process handler's with the
archive's own settings."""

from __future__ import annotations

import pytest


LONG = " ".join(f"part {i}: the delivery was slow but the product itself is fine" for i in range(30))
SHORT = "great value"
POLICIES = {"trunc_tail": "tail", "trunc_head_tail": "head+tail", "trunc_chunks": "chunks"}


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tiny_export, multi_label_model, tmp_path_factory):
    """(server, {model name: in-process reference classifier}) for the three policies and a multi-label model."""
    import build_mar
    from export.mar import build_mar as build_archive
    from harness.inprocess import started_handler
    from harness.models import model_dir_like_mar
    from harness.torchserve import TorchServe

    multi_checkpoint, multi_export = multi_label_model
    archives = {name: (tiny_checkpoint, tiny_export, ["--truncation", policy, "--max-chunks", "6"]) for name, policy in POLICIES.items()}
    archives["multi_label"] = (multi_checkpoint, multi_export, [])
    store, references = tmp_path_factory.mktemp("policy_store"), {}
    for name, (checkpoint, export_dir, extra) in archives.items():
        request = build_mar.parse_args(["--checkpoint", str(checkpoint), "--export-dir", str(export_dir), "--out", str(store), "--model-name", name,
                                        "--min-workers", "1", "--max-workers", "1", *extra])  # fmt: skip
        build_archive(request)
        model_dir = model_dir_like_mar(checkpoint, export_dir, tmp_path_factory.mktemp(f"ref_{name}"))
        handler, _ = started_handler(model_dir, model_yaml=request.torchserve.model_config(request.handler))
        references[name] = handler.classifier
    models = [f"{name}={name}.mar" for name in archives]
    with TorchServe(workdir=tmp_path_factory.mktemp("policy_ts"), model_store=store, models=models).running() as server:
        yield server, references


def test_each_policy_answers_like_the_handler_with_its_settings(served):
    server, references = served
    for name, policy in POLICIES.items():
        response = server.predict({"text": [LONG, SHORT]}, model_name=name)
        assert response.status_code == 200, response.text
        long_answer, short_answer = response.json()
        expected = references[name].classify([LONG, SHORT])
        for got, want in zip((long_answer, short_answer), expected):
            assert got["label"] == want["label"] and got["tokens"] == want["tokens"] and got["truncated"] == want["truncated"], name
            assert max(abs(got["probabilities"][k] - want["probabilities"][k]) for k in want["probabilities"]) <= 1e-4, name
        assert long_answer["tokens"] > 64 and short_answer["tokens"] == 4
        if policy == "chunks":
            assert long_answer["chunks"] > 1 and short_answer["chunks"] == 1
        else:
            assert long_answer["truncated"] and "chunks" not in long_answer
    tail, both = (server.predict(LONG, model_name=name).json()["probabilities"] for name in ("trunc_tail", "trunc_head_tail"))
    assert tail != both  # the policies read different tokens of the same text


def test_top_k_and_logits_are_returned_on_request(served):
    server, references = served
    answer = server.predict({"text": SHORT, "top_k": 2, "return_logits": True}, model_name="trunc_tail").json()
    assert [entry["label"] for entry in answer["top_k"]] == sorted(answer["probabilities"], key=answer["probabilities"].get, reverse=True)[:2]
    assert answer["top_k"][0] == {"label": answer["label"], "score": answer["score"]}
    expected = references["trunc_tail"].logits([SHORT])[0]
    assert [round(float(v), 4) for v in expected] == [round(answer["logits"][label], 4) for label in references["trunc_tail"].labels]


def test_bad_options_are_400_for_that_request_alone(served):
    server, _ = served
    bad = server.predict({"text": SHORT, "top_k": -1}, model_name="trunc_tail")
    assert bad.status_code == 400 and "top_k must be a positive integer" in bad.json()["error"]
    refused = server.predict({"text": SHORT, "threshold": 0.3}, model_name="trunc_tail")
    assert refused.status_code == 400 and "multi-label models only" in refused.json()["error"]
    assert server.predict(SHORT, model_name="trunc_tail").status_code == 200  # the worker goes on


def test_multi_label_models_answer_independent_scores_and_labels_over_the_threshold(served):
    server, references = served
    assert references["multi_label"].spec.multi_label
    default = server.predict({"text": LONG}, model_name="multi_label").json()
    scores = default["probabilities"]
    assert default["threshold"] == 0.5 and default["labels"] == [k for k in sorted(scores, key=scores.get, reverse=True) if scores[k] >= 0.5]
    assert all(0 < value < 1 for value in scores.values())
    assert server.predict({"text": LONG, "threshold": 0.0}, model_name="multi_label").json()["labels"] == sorted(scores, key=scores.get, reverse=True)
    assert server.predict({"text": LONG, "threshold": 1.0}, model_name="multi_label").json()["labels"] == []
