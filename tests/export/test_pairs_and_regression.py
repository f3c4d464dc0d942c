"""Sentence-pair and regression models through export, quantization and archive building: parity on pairs
tokenized as pairs (segment B's token type 1 fed where the family has types), parity on a regression model's
raw score, int8 calibrated on pairs, a Pearson budget for regression, and the archive's pair settings."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
import zipfile

import numpy as np
import pytest
import yaml

from export.onnx_export import check_onnx_parity, onnx_from_checkpoint, parity_inputs
from export.quantize import CalibrationData, QuantizationBudgetError, onnx_outputs, static_int8_from_onnx, tensorrt_qdq_onnx
from handler import layout
from handler.errors import ArchiveError, DataError, ExportError, ParityError
from handler.settings import HandlerSettings
from handler.spec import ModelSpec, QuantizationRecord
from harness.models import LABELS, byte_level_tokenizer, random_family_checkpoint
from training.data import default_backbone_dir

PAIRS = [
    ("great value, would buy again", "the price was fair for what you get"),
    ("broken on arrival, refund please", "it works perfectly"),
    ("it arrived on monday", "delivery took three days"),
    ("the staff were lovely and the room was spotless", "clean room, friendly people, we will come back next summer for sure"),
    ("worst delivery experience ever", "ok"),
    ("the box is blue and weighs two kilos", "the box is blue and weighs two kilos"),
]


def write_csv(path, rows, header=("label", "txt", "txt_pair")):
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def export_of(checkpoint, out_dir, **options):
    onnx_path, _ = onnx_from_checkpoint(checkpoint, out_dir, **options)
    return onnx_path


@pytest.fixture(scope="module")
def pair_csv(tmp_path_factory):
    """label,txt,txt_pair rows with the tiny models' labels."""
    rows = [(LABELS[i % 3], text, pair) for i, (text, pair) in enumerate(PAIRS)] * 8
    return write_csv(tmp_path_factory.mktemp("pairs") / "pairs.csv", rows)


@pytest.fixture(scope="module")
def bert_pair(tmp_path_factory):
    """(checkpoint, model.onnx) of a random BERT pair classifier (MiniLM's tokenizer: token types 0/1)."""
    root = tmp_path_factory.mktemp("bert_pair")
    checkpoint = random_family_checkpoint("bert", root / "checkpoint", default_backbone_dir(), text_pair=True)
    return checkpoint, export_of(checkpoint, root / "export", max_length=64)


@pytest.fixture(scope="module")
def regression_model(tmp_path_factory):
    """(checkpoint, model.onnx) of a random BERT regression model (one output, "score")."""
    root = tmp_path_factory.mktemp("regression")
    checkpoint = random_family_checkpoint("bert", root / "checkpoint", default_backbone_dir(), labels=["score"], problem_type="regression")
    return checkpoint, export_of(checkpoint, root / "export", max_length=64)


def copied_export(onnx_path, out_dir):
    out_dir.mkdir()
    for name in (layout.ONNX_FILE, layout.SPEC_FILE):
        shutil.copy2(onnx_path.parent / name, out_dir / name)
    return out_dir / layout.ONNX_FILE


def test_bert_pair_export_matches_torch_on_pairs_with_segment_b_fed(bert_pair, pair_csv):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    checkpoint, onnx_path = bert_pair
    spec = ModelSpec.load(onnx_path.parent)
    assert spec.text_pair and "token_type_ids" in spec.input_names
    texts, pairs = parity_inputs(pair_csv, spec.text_pair)
    assert len(pairs) == len(texts) and all((text, pair) in PAIRS for text, pair in zip(texts, pairs))
    report = check_onnx_parity(onnx_path, checkpoint, texts, batch_size=7, pairs=pairs)
    assert report.text_pair and report.type_one_tokens > 0 and report.argmax_agreement == 1.0
    assert report.max_abs_logit_diff <= 1e-4 and "text pairs" in report.summary() and "token type 1" in report.summary()

    # segment B's type ids reach the graph: zeroing them changes the logits
    feeds = AutoTokenizer.from_pretrained(checkpoint)(texts[:6], pairs[:6], padding=True, return_tensors="np")
    feeds = {name: feeds[name].astype(np.int64) for name in spec.input_names}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (with_types,) = session.run(None, feeds)
    (without_types,) = session.run(None, feeds | {"token_type_ids": np.zeros_like(feeds["token_type_ids"])})
    assert not np.allclose(with_types, without_types, atol=1e-3)


def test_pair_parity_fails_when_the_feed_has_no_token_type_one(bert_pair, monkeypatch):
    from export import onnx_export

    checkpoint, onnx_path = bert_pair
    model, tokenizer = onnx_export.load_checkpoint(checkpoint)

    def zero_types(*args, **kwargs):
        encoded = tokenizer(*args, **kwargs)
        encoded["token_type_ids"] = encoded["token_type_ids"] * 0
        return encoded

    monkeypatch.setattr(onnx_export, "load_checkpoint", lambda _: (model, zero_types))
    texts, pairs = parity_inputs(None, True)
    with pytest.raises(ParityError, match="no token type 1.*segment B"):
        check_onnx_parity(onnx_path, checkpoint, texts, pairs=pairs)


def test_a_pair_model_is_checked_on_pairs_only(bert_pair, labelled_csv):
    checkpoint, onnx_path = bert_pair
    with pytest.raises(ExportError, match="text-pair model.*pass pairs="):
        check_onnx_parity(onnx_path, checkpoint, ["only one text"])
    with pytest.raises(DataError, match="no txt_pair column.*label,txt,txt_pair"):
        parity_inputs(labelled_csv, True)


def test_roberta_pair_export_matches_torch_on_pairs(tmp_path):
    checkpoint = random_family_checkpoint("roberta", tmp_path / "checkpoint", tokenizer=byte_level_tokenizer(), text_pair=True)
    onnx_path = export_of(checkpoint, tmp_path / "export")
    spec = ModelSpec.load(onnx_path.parent)
    assert spec.text_pair and spec.input_names == ("input_ids", "attention_mask")
    texts, pairs = parity_inputs(None, True)
    report = check_onnx_parity(onnx_path, checkpoint, texts, batch_size=5, pairs=pairs)
    assert report.text_pair and report.type_one_tokens is None  # no token types: nothing of type 1 to feed
    assert report.max_abs_logit_diff <= 1e-4 and report.argmax_agreement == 1.0


def test_text_pair_flag_overrides_config_json(tiny_checkpoint, pair_csv, tmp_path, monkeypatch, capsys):
    from export import onnx_export

    out = tmp_path / "export"
    argv = ["onnx_export", "--checkpoint", str(tiny_checkpoint), "--out-dir", str(out), "--max-length", "32", "--texts", str(pair_csv), "--text-pair"]
    monkeypatch.setattr(sys, "argv", argv)
    onnx_export.main()
    assert ModelSpec.from_checkpoint(tiny_checkpoint).text_pair is False and ModelSpec.load(out).text_pair is True
    assert "parity on 48 text pairs" in capsys.readouterr().out


def test_regression_export_is_checked_on_its_raw_score(regression_model):
    checkpoint, onnx_path = regression_model
    spec = ModelSpec.load(onnx_path.parent)
    assert spec.regression and spec.labels == ["score"]
    texts, _ = parity_inputs(None, False)
    report = check_onnx_parity(onnx_path, checkpoint, texts, batch_size=7)
    assert report.argmax_agreement is None and report.max_abs_logit_diff <= 1e-4
    assert "max |Δscore|" in report.summary() and "argmax" not in report.summary()
    with pytest.raises(ParityError, match="score .* vs ") as caught:
        check_onnx_parity(onnx_path, checkpoint, texts[:3], tolerance=-1.0)
    assert "argmax" not in str(caught.value)


def test_int8_pair_model_is_calibrated_and_evaluated_on_pairs(bert_pair, pair_csv, labelled_csv, tmp_path):
    checkpoint, onnx_path = bert_pair
    onnx_path = copied_export(onnx_path, tmp_path / "export")
    data = CalibrationData.load(onnx_path.parent, checkpoint, pair_csv, pair_csv, calibration_texts=32)
    assert len(data.calibration_pairs) == len(data.calibration) == 32 and len(data.evaluation_pairs) == 48
    assert all((text, pair) in PAIRS for text, pair in zip(data.calibration, data.calibration_pairs))  # sampled together
    assert all((batch["token_type_ids"] == 1).any() for batch in data.calibration_batches().batches)

    record = static_int8_from_onnx(onnx_path, checkpoint, pair_csv, pair_csv, calibration_texts=32, budget_points=100)
    spec = ModelSpec.load(onnx_path.parent)
    assert spec.text_pair and spec.quantization == record and record.metric == "accuracy" and record.evaluation_texts == 48
    assert (onnx_path.parent / layout.INT8_ONNX_FILE).is_file()
    with pytest.raises(DataError, match="no txt_pair column.*--calibration"):
        CalibrationData.load(onnx_path.parent, checkpoint, labelled_csv, pair_csv, calibration_texts=8)


def test_int8_regression_model_has_a_pearson_budget(regression_model, labelled_csv, tmp_path):
    from transformers import AutoTokenizer

    checkpoint, onnx_path = regression_model
    onnx_path = copied_export(onnx_path, tmp_path / "export")
    spec = ModelSpec.load(onnx_path.parent)
    texts = [text for pair in PAIRS for text in pair] * 4
    gold = onnx_outputs(onnx_path, AutoTokenizer.from_pretrained(checkpoint), spec, texts)[:, 0]  # fp32's own scores: r = 1
    assert np.ptp(gold) > 0
    scores_csv = write_csv(tmp_path / "scores.csv", [(f"{score:.6f}", text) for score, text in zip(gold, texts)], header=("label", "txt"))

    record = static_int8_from_onnx(onnx_path, checkpoint, scores_csv, scores_csv, calibration_texts=32, budget_points=100)
    assert record.metric == "pearson" and record.accuracy_fp32 == 1.0 and ModelSpec.load(onnx_path.parent).quantization == record
    int8 = onnx_outputs(onnx_path.with_name(layout.INT8_ONNX_FILE), AutoTokenizer.from_pretrained(checkpoint), spec, texts)[:, 0]
    assert record.accuracy_quantized == round(float(np.corrcoef(int8, gold)[0, 1]), 4)
    assert record.loss_points == round(100 * (1.0 - record.accuracy_quantized), 2)

    with pytest.raises(QuantizationBudgetError, match="correlation points"):
        static_int8_from_onnx(onnx_path, checkpoint, scores_csv, scores_csv, calibration_texts=16, budget_points=-100)
    data = CalibrationData.load(onnx_path.parent, checkpoint, scores_csv, scores_csv, calibration_texts=32)
    tensorrt = tensorrt_qdq_onnx(onnx_path, "int8", data, budget_points=100)  # TensorRT's QDQ graph: the same budget code
    assert tensorrt.metric == "pearson" and tensorrt.accuracy_fp32 == 1.0
    assert json.loads(layout.sidecar_path(onnx_path.with_name(layout.QDQ_ONNX_FILES["int8"])).read_text())["metric"] == "pearson"
    with pytest.raises(DataError, match="not a finite number"):
        CalibrationData.load(onnx_path.parent, checkpoint, scores_csv, labelled_csv, calibration_texts=8)


def test_old_quantization_records_read_as_accuracy():
    old = dict(method="static int8 (QDQ)", per_channel=True, calibrate_method="MinMax", calibration_source="train.csv", calibration_texts=300,
               seed=0, quantized_ops="weights", evaluation_source="test.csv", evaluation_texts=10, accuracy_fp32=0.8, accuracy_int8=0.79,
               budget_points=0.5)  # fmt: skip
    assert QuantizationRecord.from_dict(old).metric == "accuracy"


def test_build_mar_refuses_window_policies_for_pairs_and_writes_pair_truncation(bert_pair, tiny_checkpoint, tmp_path, capsys):
    import build_mar
    from export.mar import build_mar as build_archive

    checkpoint, onnx_path = bert_pair
    base = ["--checkpoint", str(checkpoint), "--export-dir", str(onnx_path.parent), "--out", str(tmp_path)]
    for policy in ("chunks", "tail", "head+tail"):
        with pytest.raises(ArchiveError, match=f"--truncation {re.escape(policy)} is not served for a text-pair model.*--pair-truncation.*--truncation head"):
            build_archive(build_mar.parse_args([*base, "--truncation", policy]))
    with pytest.raises(ArchiveError, match="applies to text-pair models only.*--text-pair"):
        build_archive(build_mar.parse_args(["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path), "--pair-truncation", "only_first"]))

    mar = build_archive(build_mar.parse_args([*base, "--pair-truncation", "only_second", "--model-name", "pairs"]))
    archive = zipfile.ZipFile(mar)
    config = yaml.safe_load(archive.read(layout.MODEL_CONFIG_FILE))
    assert config["handler"]["pair_truncation"] == "only_second" and config["handler"]["truncation"] == "head"
    assert HandlerSettings.from_model_yaml(config).pair_truncation == "only_second"
    assert '"text_pair": true' in archive.read(layout.SPEC_FILE).decode()
    assert "text pairs (pair_truncation only_second)" in capsys.readouterr().out


def test_archive_summary_names_regression_and_pairs():
    from export.mar import archive_summary

    regression = ModelSpec(id2label={0: "similarity"}, problem_type="regression", text_pair=True)
    line = archive_summary(regression, HandlerSettings())
    assert "regression score 'similarity'" in line and "text pairs (pair_truncation longest_first)" in line
    assert "single texts" in archive_summary(ModelSpec(id2label={0: "a", 1: "b"}), HandlerSettings())


def test_fp16_check_and_engine_profile_of_a_pair_model(bert_pair, tmp_path, capsys):
    from export import trt_engine

    checkpoint, onnx_path = bert_pair
    onnx_path = copied_export(onnx_path, tmp_path / "export")
    spec = ModelSpec.load(onnx_path.parent)
    line = trt_engine.trtexec_command(onnx_path, tmp_path / "m.plan", spec, trt_engine.default_profile(spec, 8), "fp16", None)
    assert all(f"--{bound}Shapes=input_ids:{shape},attention_mask:{shape},token_type_ids:{shape}" in line
               for bound, shape in (("min", "1x1"), ("opt", "8x64"), ("max", "16x64")))  # fmt: skip
    trt_engine.checked_fp16_onnx(onnx_path, checkpoint, None)  # the fp16 ONNX is checked on pairs, segment B fed
    assert "text pairs" in capsys.readouterr().out
