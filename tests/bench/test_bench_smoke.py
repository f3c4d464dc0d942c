"""Seconds-long smoke runs of the benchmark code paths (the benchmarks themselves are scripts)."""

from __future__ import annotations

import csv
import sys

import pytest

from bench import inprocess_cpu
from bench.load_test import run_level, torchserve_target


def test_inprocess_cpu_quick_run_writes_its_tables(tiny_checkpoint, tiny_export, tmp_path, monkeypatch):
    test_csv = tmp_path / "test.csv"
    rows = [("positive", "great stuff"), ("negative", "awful, broken"), ("neutral", "it is a box")] * 30
    with test_csv.open("w", newline="") as handle:
        csv.writer(handle).writerows([("label", "txt"), *rows])
    out = tmp_path / "results"
    argv = ["inprocess_cpu.py", "--quick", "--checkpoint", str(tiny_checkpoint), "--export-dir", str(tiny_export), "--test-csv", str(test_csv), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    inprocess_cpu.main()
    with (out / "cpu_inprocess.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["variant"] for row in table] == ["stock_baseline", *inprocess_cpu.VARIANTS]
    assert all(float(row["texts_per_s"]) > 0 for row in table)
    assert float(table[1]["speedup_vs_stock"]) > 0 and table[1]["accuracy_delta_points"] == "0.0"
    assert (out / "cpu_inprocess.png").stat().st_size > 1000


@pytest.mark.integration
def test_load_level_against_real_torchserve(torchserve):
    row = run_level(torchserve_target(torchserve, "bert_trt", ["short text", "a somewhat longer text for the load test"]), concurrency=4, max_requests=20, max_seconds=30)
    assert row["requests"] == 20 and row["errors"] == 0
    assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]


def test_door_in_flight_quick_run_writes_its_table(tiny_checkpoint, tiny_export, tmp_path, monkeypatch):
    from bench import door_in_flight
    from harness.models import model_dir_like_mar

    model_dir = model_dir_like_mar(tiny_checkpoint, tiny_export, tmp_path / "model")
    out = tmp_path / "results"
    argv = ["door_in_flight.py", "--model-dir", str(model_dir), "--backend", "onnxruntime", "--seconds", "0.3", "--clients", "8", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    door_in_flight.main()
    with (out / "door_in_flight.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["in_flight"] for row in table] == ["1", "2", "4", "2 unlocked"]
    assert all(int(row["requests"]) > 0 and row["answers_off_by_more_than_2e-3"] == "0" for row in table)


@pytest.mark.integration
def test_gpu_host_path_quick_run_measures_every_stage_on_the_cpu(tiny_checkpoint, tmp_path, monkeypatch):
    """bench/gpu_host_path.py end to end at HEAD (in-process, TorchServe, KServe with 1 and 2 workers), on the CPU."""
    import json
    import subprocess

    from bench import gpu_host_path
    from harness.models import LABELS

    repo = gpu_host_path.REPO
    baseline = tmp_path / "baseline"  # the code at HEAD stands in for the baseline tree
    baseline.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", "HEAD", "handler", "export", "harness", "training", "ops", "build_mar.py", "config.properties"],
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
    test_csv = tmp_path / "test.csv"
    with test_csv.open("w", newline="") as handle:
        csv.writer(handle).writerows([("label", "txt"), *[(LABELS[i % 3], f"text number {i} about a {'good' if i % 2 else 'bad'} hotel") for i in range(150)]])
    out = tmp_path / "results"
    argv = ["gpu_host_path.py", "--quick", "--checkpoint", str(tiny_checkpoint), "--texts", str(test_csv), "--baseline-tree", str(baseline),
            "--work", str(tmp_path / "work"), "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    gpu_host_path.main()
    report = json.loads((out / "host_path.json").read_text())
    for key in ("backend_texts_per_s_b64", "handler_texts_per_s_b64", "tokenize_us_per_text", "torchserve_rps_best", "torchserve_rps_baseline_same_run",
                "kserve_rps_best", "p50_ms_c1_torchserve", "p50_ms_c1_kserve", "handler_texts_per_s_b64_baseline_same_run"):  # fmt: skip
        assert report[key] > 0, key
    assert report["max_abs_dp_vs_baseline"] <= 1e-4  # the same probabilities as the code it is compared with
    assert {row["workers"] for row in report["kserve_rows"]} == {1, 2} and all(row["errors"] == 0 for row in report["kserve_rows"])
    assert all(row["errors"] == 0 and row["backend_busy_pct"] >= 0 for row in report["torchserve_rows"])
    assert "handle()" in (out / "host_path_profile.txt").read_text()


def fake_student(tmp_path, name: str, seed: int = 1):
    """A 1-layer, FFN-32 random BERT with a compression record in its config.json, as training.compress writes it."""
    import json
    from dataclasses import asdict

    from handler.spec import COMPRESSION_CONFIG_KEY, CompressionRecord
    from harness.models import random_bert_checkpoint
    from training.data import default_backbone_dir

    student = random_bert_checkpoint(tmp_path / name, default_backbone_dir(), seed=seed, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=128, initializer_range=0.5)  # fmt: skip
    record = CompressionRecord(
        teacher="tiny", teacher_layers=2, teacher_intermediate_size=64, kept_layers=[1], intermediate_size=32, parameters_teacher=999171,
        parameters_student=988547, importance="test", importance_texts=8, train_source="train.csv", distillation_steps=3, batch_size=4,
        temperature=2.0, soft_weight=0.5, hidden_weight=0.0, seed=0, evaluation_source="test.csv", evaluation_texts=8, metric="accuracy",
        teacher_score=0.5, student_score=0.5, teacher_macro_f1=0.4, student_macro_f1=0.4, budget_points=0.5, seconds=12.5, threads=2,
    )  # fmt: skip
    config = json.loads((student / "config.json").read_text())
    config[COMPRESSION_CONFIG_KEY] = asdict(record)
    (student / "config.json").write_text(json.dumps(config))
    return student, record


@pytest.mark.integration
def test_compression_pareto_quick_run_measures_every_archive(tiny_checkpoint, tiny_export, tmp_path):
    """bench/compression_pareto.py end to end on tiny models: stock, teacher fp32, default, one student x fp32/int8."""
    import json

    from bench import compression_pareto
    from harness.models import LABELS

    student, record = fake_student(tmp_path, "l1")
    test_csv = tmp_path / "test.csv"
    with test_csv.open("w", newline="") as handle:
        csv.writer(handle).writerows([("label", "txt"), *[(LABELS[i % 3], f"text {i} about a {'good' if i % 2 else 'bad'} hotel" + " indeed" * (i % 9)) for i in range(64)]])
    out = tmp_path / "results"
    compression_pareto.main(["--quick", "--teacher", str(tiny_checkpoint), "--teacher-export", str(tiny_export), "--students", str(student),
                             "--test-csv", str(test_csv), "--calibration", str(test_csv), "--parity-texts", str(test_csv),
                             "--int8-budget-points", "100", "--budget-points", "100", "--out", str(out)])  # fmt: skip (random weights: gates wide open)
    with (out / "compression_pareto.csv").open() as handle:
        table = {row["variant"]: row for row in csv.DictReader(handle)}
    assert list(table) == ["stock", "teacher/fp32", "default", "l1/fp32", "l1/int8"]
    for name, row in table.items():
        assert row["status"] == "ok", name
        assert float(row["requests_per_s"]) > 0 and float(row["texts_per_s"]) > 0 and int(row["errors"]) == 0, name
        assert 0 <= float(row["accuracy"]) <= 1 and 0 <= float(row["macro_f1"]) <= 1 and row["accuracy_delta_points"] != "", name
        assert float(row["speedup_vs_default_archive"]) > 0 and float(row["speedup_vs_stock"]) > 0, name
        if name != "stock":  # the stock handler answers labels only
            assert float(row["batch_invariance_max_abs"]) <= 1e-4 and float(row["onnx_mib"]) > 0, name
    assert table["teacher/fp32"]["accuracy_delta_points"] == "0.0" and table["default"]["speedup_vs_default_archive"] == "1.0"
    assert (table["default"]["precision"], table["teacher/fp32"]["precision"]) == ("int8", "fp32")
    assert table["l1/int8"]["layers"] == "1" and table["l1/int8"]["intermediate_size"] == "32" and int(table["l1/int8"]["parameters"]) > 0
    assert float(table["l1/int8"]["training_seconds"]) == record.seconds and table["default"]["training_seconds"] == ""
    report = json.loads((out / "compression.json").read_text())
    for key in ("student", "variant", "speedup_vs_default_archive", "accuracy_delta_points", "batch_invariance_max_abs", "macro_f1_delta_points",
                "requests_per_s", "default_archive_requests_per_s", "stock_requests_per_s", "layers", "intermediate_size", "parameters",
                "training_seconds", "goal", "goal_met", "command", "date", "cpu_count"):  # fmt: skip
        assert key in report, key
    assert report["recommended"] == "l1/int8" and report["student"] == str(student.resolve()) and report["variant"] == "int8"
    assert report["requests_per_s"] == float(table["l1/int8"]["requests_per_s"]) and isinstance(report["goal_met"], bool)
    assert (out / "compression_pareto.png").stat().st_size > 1000
    assert not (out / "compression_pareto_work").exists()


def test_compression_pareto_recommends_the_fastest_int8_student_within_budget():
    from bench.compression_pareto import recommendation

    def row(variant, role, precision, rps, delta, status="ok"):
        return {"variant": variant, "role": role, "precision": precision, "status": status, "requests_per_s": rps, "accuracy_delta_points": delta,
                "checkpoint": f"/s/{variant}", "speedup_vs_default_archive": rps and round(rps / 100, 2), "speedup_vs_stock": rps and rps / 10,
                "macro_f1_delta_points": delta, "batch_invariance_max_abs": 0.0, "p50_ms": 1, "p99_ms": 2, "texts_per_s": 1, "layers": 3,
                "intermediate_size": 512, "parameters": 1, "onnx_mib": 1, "training_seconds": 5, "distillation_steps": 10}  # fmt: skip

    base = [row("stock", "stock", "fp32", 10, -0.1), row("teacher/fp32", "teacher", "fp32", 60, 0.0), row("default", "default", "int8", 100, -0.2)]
    students = [row("a/fp32", "student", "fp32", 500, 0.0), row("a/int8", "student", "int8", 250, -0.4), row("b/int8", "student", "int8", 300, -0.7),
                row("c/int8", "student", "int8", None, None, "refused: int8 refused by the export's gate")]  # fmt: skip
    picked = recommendation(base + students, 0.5, 2.0)
    assert picked["recommended"] == "a/int8" and picked["student"] == "/s/a/int8" and picked["goal_met"] is True
    assert picked["default_archive_requests_per_s"] == 100 and picked["stock_requests_per_s"] == 10 and len(picked["candidates"]) == 3
    assert recommendation(base + students, 0.5, 3.0)["goal_met"] is False
    none = recommendation(base + students[2:], 0.5, 2.0)
    assert none["recommended"] is None and none["student"] is None and none["goal_met"] is False
    assert "b/int8: -0.7 accuracy points" in none["reason"] and "c/int8: refused" in none["reason"]


def test_compression_pareto_records_a_refused_int8_instead_of_failing(tmp_path):
    import argparse

    from bench.compression_pareto import export_model
    from handler import layout

    student, _ = fake_student(tmp_path, "l1")
    texts = tmp_path / "texts.csv"
    with texts.open("w", newline="") as handle:
        csv.writer(handle).writerows([("label", "txt"), *[(["negative", "neutral", "positive"][i % 3], f"text {i} of a bench") for i in range(24)]])
    args = argparse.Namespace(parity_texts=texts, calibration=texts, calibration_texts=16, evaluation=texts, int8_budget_points=-1.0)  # no int8 can pass
    refused = export_model(student, tmp_path / "export", args, 64)
    assert refused and refused.startswith("refused: the export's int8 gate")
    assert (tmp_path / "export" / layout.ONNX_FILE).is_file() and not (tmp_path / "export" / layout.INT8_ONNX_FILE).is_file()


def test_prepare_device_bundle_writes_what_the_gpu_runs_read(tiny_checkpoint, tiny_export, labelled_csv, tmp_path, monkeypatch):
    """bench/prepare_device_bundle.py on the tiny model: an fp16 model folder as a worker sees it (no ONNX), the
    test texts, their CPU fp32 reference probabilities (the handler's torch_cpu on the fp32 weights), TorchServe's
    Python package without its Java frontend."""
    import json

    import numpy as np

    from bench import prepare_device_bundle
    from bench.gpu_inprocess import cpu_reference
    from handler import layout
    from harness.models import model_dir_like_mar
    from training.data import read_labelled_csv

    out = tmp_path / "carry"
    argv = ["prepare_device_bundle.py", "--checkpoint", str(tiny_checkpoint), "--export-dir", str(tiny_export), "--test-csv", str(labelled_csv), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    prepare_device_bundle.main()
    model_dir = out / "default_model_dir"
    assert (model_dir / layout.SPEC_FILE).is_file() and not list(model_dir.glob("*.onnx"))
    assert json.loads((model_dir / layout.CHECKPOINT_DIR / "config.json").read_text())["dtype"] == "float16"
    _, texts = read_labelled_csv(out / "test.csv")
    reference = np.load(out / "reference_probs.npy")
    assert reference.shape == (len(texts), 3) and np.allclose(reference.sum(axis=1), 1, atol=1e-5)
    fp32 = cpu_reference(model_dir_like_mar(tiny_checkpoint, tiny_export, tmp_path / "fp32"), texts)
    assert np.abs(reference - fp32).max() < 1e-5  # computed from the fp32 weights, not the fp16 copy
    assert (out / "site" / "ts" / "context.py").is_file() and not (out / "site" / "ts" / "frontend").exists()


def test_prepare_device_bundle_names_the_missing_input_and_its_fix(tmp_path, monkeypatch):
    from bench import prepare_device_bundle
    from handler.errors import DataError

    with pytest.raises(DataError, match="config.json is missing: train the default model with `make train`"):
        prepare_device_bundle.check_inputs(tmp_path / "no_checkpoint", tmp_path, tmp_path / "test.csv")


def test_cold_start_measures_every_cpu_backend(tiny_checkpoint, tiny_export, tmp_path, monkeypatch):
    import json

    from bench import cold_start

    out = tmp_path / "results"
    argv = ["cold_start.py", "--checkpoint", str(tiny_checkpoint), "--export-dir", str(tiny_export), "--out", str(out), "--repeats", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    cold_start.main()
    rows = json.loads((out / "cold_start.json").read_text())
    assert [row["variant"] for row in rows] == list(cold_start.BACKEND_SETTINGS)
    assert [row["backend"] for row in rows] == ["onnxruntime", "onnxruntime", "torch_cpu"]
    assert all(row["ready_s"] > 0 and row["first_request_ms"] > 0 and row["steady_median_ms"] > 0 for row in rows)


def test_truncation_policies_measures_each_policy_on_the_longest_texts(tiny_checkpoint, tiny_export, labelled_csv, tmp_path, monkeypatch):
    from bench import truncation_policies
    from handler.settings import TRUNCATION_POLICIES

    out = tmp_path / "results"
    argv = ["truncation_policies.py", "--checkpoint", str(tiny_checkpoint), "--export-dir", str(tiny_export), "--test", str(labelled_csv),
            "--max-length", "16", "--share", "0.5", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    truncation_policies.main()
    with (out / "truncation_policies.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["policy"] for row in table] == list(TRUNCATION_POLICIES)
    assert all(0 <= float(row["accuracy"]) <= 1 and int(row["texts"]) == 24 for row in table)


def test_gpu_scaling_compares_the_best_row_of_each_run(tmp_path, monkeypatch):
    """bench/gpu_scaling.py reads two gpu_torchserve.json reports (made up here: the script only does arithmetic)."""
    import json

    from bench import gpu_scaling

    def report(folder, rows, workers):
        folder.mkdir()
        (folder / "gpu_torchserve.json").write_text(json.dumps({"gpu": "test", "shape": "minilm", "workers_per_gpu": workers, "rows": rows}))
        return folder

    one = report(tmp_path / "one", [{"config": "4x64x1", "throughput_rps": 100.0, "concurrency": 64, "gpu0_util": 90},
                                    {"config": "4x64x1", "throughput_rps": 120.0, "concurrency": 256, "gpu0_util": 95}], 4)  # fmt: skip
    two = report(tmp_path / "two", [{"config": "8x64x1", "throughput_rps": 210.0, "concurrency": 256, "gpu0_util": 80}], 4)
    out = tmp_path / "scaling.json"
    monkeypatch.setattr(sys, "argv", ["gpu_scaling.py", "--one", str(one), "--two", str(two), "--out", str(out)])
    gpu_scaling.main()
    scaling = json.loads(out.read_text())
    assert (scaling["req_per_s_1gpu"], scaling["req_per_s_2gpu"], scaling["speedup_2_vs_1"]) == (120.0, 210.0, 1.75)
    assert scaling["configs"][0]["gpu0_util_1gpu"] == 95 and scaling["configs"][0]["concurrency_1gpu"] == 256


@pytest.mark.integration
def test_http_load_level_against_real_torchserve(torchserve, labelled_csv):
    from bench.http_load import run_http_level
    from bench.load_test import torchserve_key_target
    from training.data import read_labelled_csv

    _, texts = read_labelled_csv(labelled_csv)
    target = torchserve_key_target(int(torchserve.inference_url.rsplit(":", 1)[1]), "bert_trt", texts, torchserve.token("inference"))
    row = run_http_level(target, concurrency=2, seconds=1.0, processes=1)
    assert row["requests"] > 0 and row["errors"] == 0, row
    assert 0 < row["p50_ms"] <= row["p99_ms"]


@pytest.fixture(scope="module")
def bench_store(tiny_checkpoint, tiny_export, tmp_path_factory):
    """The archives `make bench-mars` builds, from the tiny model: bert_stock.mar (bench/stock_handler.py) and
    bert_trt_nocache.mar (the shipped archive, prediction cache off)."""
    import build_mar
    from bench import stock_handler
    from export.mar import build_mar as build_archive

    store = tmp_path_factory.mktemp("bench_store")
    build_archive(build_mar.parse_args(["--checkpoint", str(tiny_checkpoint), "--handler", stock_handler.__file__, "--model-name", "bert_stock",
                                        "--out", str(store)]))  # fmt: skip
    build_archive(build_mar.parse_args(["--checkpoint", str(tiny_checkpoint), "--export-dir", str(tiny_export), "--out", str(store),
                                        "--model-name", "bert_trt_nocache", "--response-cache-size", "0"]))  # fmt: skip
    return store


@pytest.mark.integration
def test_config_sweep_runs_one_small_configuration(bench_store, labelled_csv, tmp_path, monkeypatch):
    from bench import config_sweep

    out = tmp_path / "results"
    argv = ["config_sweep.py", "--store", str(bench_store), "--test-csv", str(labelled_csv), "--batch-sizes", "4", "--delays", "5", "--workers", "1",
            "--concurrency", "1", "4", "--max-requests", "12", "--max-seconds", "10", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    config_sweep.main()
    with (out / "config_sweep.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["concurrency"] for row in table] == ["1", "4"]
    assert all(int(row["errors"]) == 0 and float(row["throughput_rps"]) > 0 for row in table), table


@pytest.mark.integration
def test_load_test_quick_run_compares_the_stock_archive_with_ours(bench_store, labelled_csv, tmp_path, monkeypatch):
    from bench import load_test

    out = tmp_path / "results"
    argv = ["load_test.py", "--quick", "--store", str(bench_store), "--test-csv", str(labelled_csv), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    load_test.main()
    with (out / "load_test.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert {(row["config"].split()[0], row["concurrency"]) for row in table} >= {("bert_stock", "1"), ("bert_trt", "8")}, table
    assert all(int(row["errors"]) == 0 and int(row["requests"]) == 40 for row in table), table
    assert (out / "load_test.png").stat().st_size > 1000


@pytest.mark.integration
def test_soak_command_writes_its_report_table_and_plot(tiny_model_store, tmp_path, monkeypatch):
    import json

    from bench import soak

    out = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["soak.py", "--store", str(tiny_model_store), "--minutes", "0.25", "--concurrency", "2", "--out", str(out)])
    soak.main()
    report = json.loads((out / "soak.json").read_text())
    assert report["requests"] > 0 and report["unexpected"] == 0 and report["samples"]
    with (out / "soak.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(report["samples"])
    assert (out / "soak.png").stat().st_size > 1000
