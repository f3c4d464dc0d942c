"""Sentence pairs, reranking and regression over real servers: a BERT pair classifier (token types 0/1), a
RoBERTa pair classifier (no token types, <s> A </s></s> B </s>) and a BERT regression model, each a tiny
random checkpoint built here, exported to ONNX, archived and served by TorchServe and by the KServe door.

Answers equal transformers' own model on the tokenizer's own pair encoding; a pair's answer is the same alone
and batched with others; each bad combination gets a 400 for that request alone while the rest of its batch
is answered."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness.kserve import running_kserve
from harness.models import byte_level_tokenizer, random_family_checkpoint
from tests.integration.oip_client import triton_grpc
from training.data import default_backbone_dir

pytestmark = pytest.mark.integration

PAIRS = [
    ("great value, would buy again", "the quick brown fox jumps over the lazy dog"),
    ("broken on arrival, refund please", "broken on arrival"),
    ("the lazy dog", "great value " * 40),  # longer than max_length: text_pair is cut (longest_first)
]
PAIR_LABELS = ["different", "same"]
MODELS = {
    "pair_bert": dict(family="bert", tokenizer_dir=default_backbone_dir(), labels=PAIR_LABELS, text_pair=True),
    "pair_roberta": dict(family="roberta", labels=PAIR_LABELS, text_pair=True),
    "sts_regression": dict(family="bert", tokenizer_dir=default_backbone_dir(), labels=["similarity"], problem_type="regression"),
}
MAX_LENGTH = 48


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """{model name: checkpoint dir} of the three tiny models."""
    built = {}
    for name, options in MODELS.items():
        options = dict(options)
        family = options.pop("family")
        if family == "roberta":
            options["tokenizer"] = byte_level_tokenizer()
        built[name] = random_family_checkpoint(family, tmp_path_factory.mktemp(name) / "checkpoint", **options)
    return built


@pytest.fixture(scope="module")
def store(checkpoints, tmp_path_factory):
    """A model store with one archive per model (ONNX, batches of up to 16 gathered for 200 ms)."""
    from build_mar import parse_args
    from export.mar import build_mar
    from export.onnx_export import onnx_from_checkpoint

    store = tmp_path_factory.mktemp("pair_store")
    for name, checkpoint in checkpoints.items():
        export_dir = checkpoint.parent / "export"
        onnx_from_checkpoint(checkpoint, export_dir, max_length=MAX_LENGTH)
        build_mar(parse_args([
            "--checkpoint", str(checkpoint), "--export-dir", str(export_dir), "--out", str(store), "--model-name", name, "--no-onnx-int8",
            "--target", "cpu", "--min-workers", "1", "--max-workers", "1", "--batch-size", "16", "--max-batch-delay", "200",
        ]))  # fmt: skip
    return store


@pytest.fixture(scope="module")
def torchserve(store, tmp_path_factory):
    from harness.torchserve import TorchServe

    models = [f"{name}={name}.mar" for name in MODELS]
    with TorchServe(workdir=tmp_path_factory.mktemp("pair_ts"), model_store=store, models=models).running() as server:
        yield server


@pytest.fixture(scope="module")
def reference(checkpoints):
    """transformers' own model on the tokenizer's own encoding: name -> function(texts or pairs) -> output rows."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    def runner(checkpoint):
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(checkpoint, local_files_only=True).eval()

        @torch.inference_mode()
        def run(inputs):
            if isinstance(inputs[0], tuple):
                encoded = tokenizer([a for a, _ in inputs], [b for _, b in inputs], truncation="longest_first", max_length=MAX_LENGTH, padding=True, return_tensors="pt")
            else:
                encoded = tokenizer(inputs, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
            logits = model(**encoded).logits
            return (logits if model.config.problem_type == "regression" else logits.softmax(-1)).tolist(), encoded

        return run

    return {name: runner(checkpoint) for name, checkpoint in checkpoints.items()}


def pair_body(pairs) -> dict:
    return {"text": [a for a, _ in pairs], "text_pair": [b for _, b in pairs]}


@pytest.mark.parametrize("model", ["pair_bert", "pair_roberta"])
def test_a_pair_classifier_answers_as_transformers_does_with_the_pair_encoding(torchserve, reference, model):
    response = torchserve.predict(pair_body(PAIRS), model_name=model)
    assert response.status_code == 200, response.text
    answers = response.json()
    expected, encoded = reference[model](PAIRS)
    for answer, probabilities in zip(answers, expected):
        assert max(abs(answer["probabilities"][label] - p) for label, p in zip(PAIR_LABELS, probabilities)) <= 1e-4, answer
        assert answer["label"] == PAIR_LABELS[probabilities.index(max(probabilities))]
    if model == "pair_bert":  # segment B really reaches the model as token type 1
        assert encoded["token_type_ids"].max().item() == 1
    assert [answer["truncated_side"] for answer in answers] == [None, None, "text_pair"]
    assert answers[2]["pair_tokens"]["text_pair"] > MAX_LENGTH and answers[2]["truncated"] is True


def test_a_pair_is_answered_the_same_alone_and_batched_with_others(torchserve):
    alone = torchserve.predict({"text": PAIRS[0][0], "text_pair": PAIRS[0][1]}, model_name="pair_bert").json()
    bodies = [{"text": PAIRS[0][0], "text_pair": PAIRS[0][1]}] + [pair_body(PAIRS[1:])] * 3 + [{"text": "x " * i, "text_pair": "y"} for i in range(1, 5)]
    with ThreadPoolExecutor(len(bodies)) as pool:  # sent at once: they share the 200 ms batch
        batched = list(pool.map(lambda body: torchserve.predict(body, model_name="pair_bert"), bodies))
    assert all(response.status_code == 200 for response in batched)
    together = batched[0].json()
    assert max(abs(together["probabilities"][label] - alone["probabilities"][label]) for label in PAIR_LABELS) <= 1e-4


def test_a_regression_model_answers_its_raw_score_without_labels(torchserve, reference):
    texts = ["great value, would buy again", "broken on arrival"]
    response = torchserve.predict({"text": texts, "return_logits": True}, model_name="sts_regression")
    assert response.status_code == 200, response.text
    answers = response.json()
    expected, _ = reference["sts_regression"](texts)
    for answer, (score,) in zip(answers, expected):
        assert set(answer) == {"score", "truncated", "tokens", "logits", "backend"}
        assert abs(answer["score"] - score) <= 1e-4 and answer["logits"] == {"similarity": answer["score"]}


def test_a_reranking_request_scores_every_passage_and_sorts_them(torchserve, reference):
    query, passages = "is the parcel broken", ["broken on arrival", "the quick brown fox", "great value, would buy again", "refund please"]
    response = torchserve.predict({"query": query, "texts": passages, "top_k": 3, "return_text": True}, model_name="pair_bert")
    assert response.status_code == 200, response.text
    results = response.json()
    expected, _ = reference["pair_bert"]([(query, passage) for passage in passages])
    relevance = [row[1] for row in expected]  # the second label's probability
    best_first = sorted(range(len(passages)), key=lambda i: -relevance[i])[:3]
    assert [result["index"] for result in results] == best_first
    for result in results:
        assert abs(result["score"] - relevance[result["index"]]) <= 1e-4 and result["text"] == passages[result["index"]]


BAD = [
    ("sts_regression", {"text": "a", "text_pair": "b"}, "text_pair is not accepted: this model reads single texts"),
    ("pair_bert", {"text": "a text without its pair"}, "text_pair is missing: this model reads sentence pairs"),
    ("pair_bert", ["one", {"text": "a", "text_pair": "b"}], "text_pair is missing (text at index 0)"),
    ("sts_regression", {"text": "a", "top_k": 2}, "top_k does not apply to a regression model"),
    ("sts_regression", {"query": "q", "texts": ["a"]}, "reranking needs a pair model"),
    ("pair_bert", {"text": ["a", "b"], "text_pair": ["c"]}, '"text" has 2 items and "text_pair" 1'),
    ("pair_bert", {"text": "a", "text_pair": "  "}, "text_pair is empty"),
    ("pair_bert", {"query": "q", "texts": []}, "empty list"),
]


def test_each_bad_combination_gets_a_400_for_itself_while_its_batch_is_answered(torchserve):
    good = {"text": PAIRS[0][0], "text_pair": PAIRS[0][1]}
    jobs = [(model, body) for model, body, _ in BAD] + [("pair_bert", good)] * 4 + [("sts_regression", {"text": "fine"})] * 2
    with ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(lambda job: torchserve.predict(job[1], model_name=job[0]), jobs))
    for (_, _, message), response in zip(BAD, responses):
        assert response.status_code == 400 and message in response.json()["error"], response.text
    assert all(response.status_code == 200 for response in responses[len(BAD) :])


@pytest.fixture(scope="module")
def kserve_pair(store, tmp_path_factory):
    with running_kserve(store / "pair_bert.mar", tmp_path_factory.mktemp("kserve_pair"), model_name="pair_bert") as server:
        yield server


def test_kserve_v1_takes_pair_instances_and_a_reranking_instance(kserve_pair, torchserve):
    instances = [{"text": a, "text_pair": b} for a, b in PAIRS] + [{"query": "broken?", "texts": ["broken on arrival", "great value"]}]
    response = requests.post(f"{kserve_pair.http_url}/v1/models/pair_bert:predict", json={"instances": instances}, timeout=60)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    over_torchserve = torchserve.predict(pair_body(PAIRS), model_name="pair_bert").json()
    for got, want in zip(predictions, over_torchserve):
        assert got["label"] == want["label"] and got["pair_tokens"] == want["pair_tokens"]
        assert max(abs(got["probabilities"][label] - want["probabilities"][label]) for label in PAIR_LABELS) <= 1e-4
    assert sorted(result["index"] for result in predictions[-1]) == [0, 1]
    missing = requests.post(f"{kserve_pair.http_url}/v1/models/pair_bert:predict", json={"instances": [{"text": "alone"}]}, timeout=60)
    assert missing.status_code == 400 and "text_pair is missing" in missing.json()["error"]
    many = {"instances": [{"query": "q", "texts": ["p"] * 200}] * 2}  # 400 texts in one body: over max_texts_per_request (256)
    too_many = requests.post(f"{kserve_pair.http_url}/v1/models/pair_bert:predict", json=many, timeout=60)
    assert too_many.status_code == 413 and "too many texts in one request: 400 > 256" in too_many.json()["error"]


def test_kserve_v2_rest_and_grpc_take_text_pair_as_a_second_input(kserve_pair, torchserve):
    body = {"inputs": [{"name": "text", "shape": [len(PAIRS)], "datatype": "BYTES", "data": [a for a, _ in PAIRS]},
                       {"name": "text_pair", "shape": [len(PAIRS)], "datatype": "BYTES", "data": [b for _, b in PAIRS]}]}  # fmt: skip
    rest = requests.post(f"{kserve_pair.http_url}/v2/models/pair_bert/infer", json=body, timeout=60)
    assert rest.status_code == 200, rest.text
    rest_outputs = {output["name"]: output for output in rest.json()["outputs"]}
    grpc_reply = triton_grpc(address=kserve_pair.grpc_address, model="pair_bert", texts=[a for a, _ in PAIRS], more_inputs={"text_pair": [b for _, b in PAIRS]})
    want = torchserve.predict(pair_body(PAIRS), model_name="pair_bert").json()
    for outputs in (rest_outputs, grpc_reply["outputs"]):
        assert outputs["label"]["data"] == [answer["label"] for answer in want]
        assert outputs["pair_tokens"]["shape"] == [len(PAIRS), 2] and outputs["truncated_side"]["data"] == ["", "", "text_pair"]
        assert outputs["pair_tokens"]["data"] == [n for answer in want for n in (answer["pair_tokens"]["text"], answer["pair_tokens"]["text_pair"])]
        rows = [outputs["probabilities"]["data"][i * 2 : i * 2 + 2] for i in range(len(PAIRS))]
        assert max(abs(p - answer["probabilities"][label]) for row, answer in zip(rows, want) for label, p in zip(PAIR_LABELS, row)) <= 1e-4
    unpaired = triton_grpc(address=kserve_pair.grpc_address, model="pair_bert", texts=["alone"])
    assert unpaired["error"]["status"] == "StatusCode.INVALID_ARGUMENT" and "text_pair is missing" in unpaired["error"]["message"]
    rerank = triton_grpc(address=kserve_pair.grpc_address, model="pair_bert", texts=["broken on arrival", "great value", "the lazy dog"],
                         more_inputs={"query": ["broken?"]}, parameters={"top_k": 2})  # fmt: skip
    assert rerank["outputs"]["index"]["shape"] == [2] and rerank["outputs"]["score"]["data"] == sorted(rerank["outputs"]["score"]["data"], reverse=True)
    assert rerank["outputs"]["truncated"]["data"] == [False, False]
    misshapen = {"inputs": [{"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]},
                            {"name": "text_pair", "shape": [2, 1], "datatype": "BYTES", "data": ["c", "d"]}]}  # fmt: skip
    refused = requests.post(f"{kserve_pair.http_url}/v2/models/pair_bert/infer", json=misshapen, timeout=60)
    assert refused.status_code == 400 and 'send one text_pair per text, same shape' in refused.json()["error"]


def test_kserve_v2_answers_a_regression_model_with_scores(store, tmp_path_factory, torchserve):
    texts = ["great value, would buy again", "broken on arrival"]
    with running_kserve(store / "sts_regression.mar", tmp_path_factory.mktemp("kserve_reg"), model_name="sts_regression", grpc=False) as server:
        body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}]}
        response = requests.post(f"{server.http_url}/v2/models/sts_regression/infer", json=body, timeout=60)
        metadata = requests.get(f"{server.http_url}/v2/models/sts_regression", timeout=60).json()
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    assert set(outputs) == {"score", "truncated", "tokens"} and [output["name"] for output in metadata["outputs"]] == ["score", "truncated", "tokens"]
    want = torchserve.predict({"text": texts}, model_name="sts_regression").json()
    assert max(abs(got - answer["score"]) for got, answer in zip(outputs["score"]["data"], want)) <= 1e-4
    assert json.dumps(outputs["tokens"]["data"]) == json.dumps([answer["tokens"] for answer in want])
