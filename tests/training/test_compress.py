"""training.compress on tiny models: the student really is smaller (config, parameters, ONNX size), pruning keeps
the teacher's weights of what it keeps, importance picks what matters, the gate refuses a student over budget,
the record reaches the serving spec, and the student serves through a real TorchServe."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch

from harness.models import random_bert_checkpoint
from training.compress import (
    CompressionBudgetError,
    CompressionPlan,
    choose_layers,
    compress,
    neuron_importance,
    parameter_count,
    pruned_student,
    task_data,
)
from training.data import default_backbone_dir

ROWS = [("positive", "great value, would buy again"), ("negative", "broken on arrival, refund please"), ("neutral", "it arrived on monday"),
        ("positive", "the staff were lovely and the room was spotless"), ("negative", "worst delivery experience ever"),
        ("neutral", "the box is blue and weighs two kilos")] * 6  # fmt: skip
SHAPE = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compress_data")
    for split in ("train", "dev", "test"):
        with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("label", "txt"), *ROWS])
    return {split: folder / f"{split}.csv" for split in ("train", "dev", "test")}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return random_bert_checkpoint(tmp_path_factory.mktemp("teacher") / "checkpoint", default_backbone_dir(), seed=3, initializer_range=0.3, **SHAPE)


@pytest.fixture(scope="module")
def trained_teacher(splits, tmp_path_factory):
    """A tiny teacher fine-tuned until it gets the six training texts right."""
    from training.train import fine_tune

    backbone = random_bert_checkpoint(tmp_path_factory.mktemp("backbone") / "checkpoint", default_backbone_dir(), seed=4, **SHAPE)
    out = tmp_path_factory.mktemp("trained_teacher") / "checkpoint"
    report = fine_tune(backbone, splits["train"], splits["dev"], splits["test"], out, steps=40, batch_size=12, learning_rate=5e-3)
    assert report["test"]["accuracy"] == 1.0
    return out


def load(directory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True).eval(), AutoTokenizer.from_pretrained(directory, local_files_only=True)


def test_a_pruned_student_keeps_the_teachers_weights_of_the_layers_and_neurons_it_keeps(teacher_dir):
    teacher, _ = load(teacher_dir)
    scores = [torch.arange(64, dtype=torch.float32).flip(0) for _ in range(3)]  # neurons 0..15 matter most
    student = pruned_student(teacher, [0, 2], scores, 16)
    assert student.config.num_hidden_layers == 2 and student.config.intermediate_size == 16
    assert teacher.config.num_hidden_layers == 3 and teacher.config.intermediate_size == 64  # the teacher is untouched
    kept = student.bert.encoder.layer[1]
    original = teacher.bert.encoder.layer[2]
    assert torch.equal(kept.intermediate.dense.weight, original.intermediate.dense.weight[:16])
    assert torch.equal(kept.output.dense.weight, original.output.dense.weight[:, :16])
    assert torch.equal(kept.attention.self.query.weight, original.attention.self.query.weight)
    per_layer = sum(p.numel() for p in teacher.bert.encoder.layer[0].parameters())
    ffn_saved = 2 * 32 * (64 - 16) + (64 - 16)  # two Linears' weights and the first one's bias
    assert parameter_count(teacher) - parameter_count(student) == per_layer + 2 * ffn_saved


def test_importance_drops_a_layer_that_does_nothing_and_prunes_dead_neurons(teacher_dir, splits):
    teacher, tokenizer = load(teacher_dir)
    layers = teacher.bert.encoder.layer
    with torch.no_grad():  # layer 1 becomes the identity: zero residual branches, plain LayerNorms around it
        for norm in (layers[0].output.LayerNorm, layers[1].attention.output.LayerNorm, layers[1].output.LayerNorm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        for dense in (layers[1].attention.output.dense, layers[1].output.dense):
            dense.weight.zero_()
            dense.bias.zero_()
        dead = [5, 17, 40]  # layer 2's neurons that always output gelu(0) = 0
        layers[2].intermediate.dense.weight[dead] = 0.0
        layers[2].intermediate.dense.bias[dead] = 0.0
    data = task_data(splits["train"], teacher.config, regression=False)
    indices = list(range(len(ROWS)))
    assert choose_layers(teacher, tokenizer, data, indices, keep=2, regression=False, max_length=32) == [0, 2]
    scores = neuron_importance(teacher, tokenizer, data, indices, regression=False, max_length=32)
    assert [len(layer_scores) for layer_scores in scores] == [64, 64, 64]
    assert all(scores[2][i] == 0 for i in dead) and (scores[2] > 0).sum() == 64 - len(dead)
    kept = torch.topk(scores[2], 61).indices
    assert not set(dead) & set(kept.tolist())


def test_compress_writes_a_smaller_student_with_its_record_and_the_spec_carries_it(trained_teacher, splits, tmp_path):
    from export.onnx_export import onnx_from_checkpoint
    from handler.spec import ModelSpec

    out = tmp_path / "student"
    plan = CompressionPlan(layers=2, intermediate_size=32, steps=40, batch_size=12, learning_rate=3e-3, importance_texts=24, budget_points=100)
    record = compress(trained_teacher, splits["train"], splits["dev"], splits["test"], out, plan)
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_layers"], config["intermediate_size"]) == (2, 32)
    assert config["compression"]["kept_layers"] == record.kept_layers and len(record.kept_layers) == 2
    assert record.parameters_student < record.parameters_teacher and record.importance_texts == 24 and record.distillation_steps == 40
    assert record.teacher_score == 1.0 and record.evaluation_texts == len(ROWS)
    student, _ = load(out)  # a normal checkpoint: transformers reads its shape from config.json
    assert parameter_count(student) == record.parameters_student
    teacher_onnx, _ = onnx_from_checkpoint(trained_teacher, tmp_path / "teacher_export", max_length=32)
    student_onnx, spec = onnx_from_checkpoint(out, tmp_path / "student_export", max_length=32)
    assert student_onnx.stat().st_size < teacher_onnx.stat().st_size
    assert ModelSpec.load(tmp_path / "student_export").compression == record == spec.compression


def test_the_gate_refuses_a_student_over_budget_and_writes_nothing(trained_teacher, splits, tmp_path):
    from handler.errors import SpecError
    from handler.spec import ModelSpec

    out = tmp_path / "student"
    # a learning rate of 10 wrecks the student's weights: it ends far below its perfect teacher
    plan = CompressionPlan(layers=1, intermediate_size=8, steps=4, batch_size=12, learning_rate=10.0, importance_texts=12, budget_points=0.5)
    with pytest.raises(CompressionBudgetError, match=r"points below its teacher .* over the budget of 0.5: nothing was written to .*--steps"):
        compress(trained_teacher, splits["train"], splits["dev"], splits["test"], out, plan)
    assert not out.exists()
    kept = tmp_path / "student-refused"  # kept for inspection, and export refuses it
    assert json.loads((kept / "config.json").read_text())["compression"]["student_score"] < 0.99
    with pytest.raises(SpecError, match="refused"):
        ModelSpec.from_checkpoint(kept)


def test_the_command_line_names_what_is_wrong(teacher_dir, splits, tmp_path, monkeypatch, capsys):
    from handler.errors import run_cli
    from training import compress as command

    files = ["--train", str(splits["train"]), "--dev", str(splits["dev"]), "--test", str(splits["test"])]
    cases = {
        ("--layers", "4"): "--layers must be within 1..3",
        ("--layers", "3"): "nothing to prune",
        ("--layers", "2", "--intermediate-size", "65"): "--intermediate-size must be within 1..64",
    }
    for arguments, message in cases.items():
        monkeypatch.setattr(sys, "argv", ["compress", "--teacher", str(teacher_dir), "--out", str(tmp_path / "s"), *files, *arguments])
        with pytest.raises(SystemExit) as exit_info:
            run_cli(command.main)
        assert message in str(exit_info.value)
    assert not (tmp_path / "s").exists()


@pytest.mark.integration
def test_a_student_serves_through_torchserve_as_transformers_runs_it(trained_teacher, splits, tmp_path):
    from build_mar import parse_args
    from export.mar import build_mar
    from export.onnx_export import onnx_from_checkpoint
    from harness.torchserve import TorchServe

    student = tmp_path / "student"
    plan = CompressionPlan(layers=2, intermediate_size=48, steps=30, batch_size=12, learning_rate=3e-3, importance_texts=24, budget_points=100)
    compress(trained_teacher, splits["train"], splits["dev"], splits["test"], student, plan)
    export_dir = tmp_path / "export"
    onnx_from_checkpoint(student, export_dir, max_length=32)
    store = tmp_path / "store"
    build_mar(parse_args(["--checkpoint", str(student), "--export-dir", str(export_dir), "--out", str(store), "--model-name", "student",
                          "--no-onnx-int8", "--target", "cpu", "--min-workers", "1", "--max-workers", "1"]))  # fmt: skip
    reference, tokenizer = load(student)
    texts = [text for _, text in ROWS[:6]]
    with torch.inference_mode():
        expected = reference(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1).tolist()
    labels = [reference.config.id2label[i] for i in range(3)]
    with TorchServe(workdir=tmp_path / "ts", model_store=store, models=["student=student.mar"]).running() as server:
        response = server.predict({"text": texts}, model_name="student")
        assert response.status_code == 200, response.text
        alone = server.predict(texts[0], model_name="student").json()
    answers = response.json()
    for answer, probabilities in zip(answers, expected):
        assert max(abs(answer["probabilities"][label] - p) for label, p in zip(labels, probabilities)) <= 1e-4
        assert answer["backend"] == "onnxruntime"
    assert max(abs(alone["probabilities"][label] - answers[0]["probabilities"][label]) for label in labels) <= 1e-4
