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
