"""The README's results table says what the committed result files say (figures and ratios recomputed here)."""

from __future__ import annotations

import csv
import json

from tests.documentation import REPO, readme_section

RESULTS = REPO / "bench" / "results"


def best_by_server(path) -> dict[str, float]:
    """Each server's best throughput over its concurrency levels and rounds (peer_comparison.csv)."""
    best: dict[str, float] = {}
    for row in csv.DictReader(path.open()):
        best[row["config"]] = max(best.get(row["config"], 0.0), float(row["throughput_rps"]))
    return best


def row_of(table: str, starts_with: str) -> str:
    rows = [line for line in table.splitlines() if line.startswith(f"| {starts_with}")]
    assert len(rows) == 1, f"README results: expected one row starting {starts_with!r}, found {len(rows)}"
    return rows[0]


def test_cpu_peer_figures_are_the_committed_runs():
    table = readme_section("Results")
    best = best_by_server(RESULTS / "cpu_2core" / "peer_comparison.csv")
    ours, triton, stock, kserve = best["ours"], best["triton"], best["stock"], best["kserve"]
    assert f"| {ours} | Triton 2.51" in row_of(table, "CPU, 2 cores, through HTTP") and f"{triton} | {ours / triton:.2f}×" in table
    assert f"stock-style TorchServe archive (eager fp32): {stock} | {ours / stock:.2f}×" in table
    assert f"| {kserve} | Triton: {triton} | {kserve / triton:.2f}×" in row_of(table, "same run, our KServe")


def test_cpu_inprocess_and_student_figures_are_the_committed_runs():
    table = readme_section("Results")
    rows = {row["variant"]: row for row in csv.DictReader((RESULTS / "cpu_2core" / "cpu_inprocess.csv").open())}
    shipped = rows["ort_static_int8_sub8"]  # what the archive runs: static int8, length-sorted sub-batches of 8
    line = row_of(table, "CPU, in-process")
    assert f"| {shipped['texts_per_s']} | stock-style baseline: {rows['stock_baseline']['texts_per_s']} | {shipped['speedup_vs_stock']}×" in line
    summary = json.loads((RESULTS / "cpu_2core" / "compression.json").read_text())
    line = row_of(table, "CPU, through TorchServe, distilled student")
    assert f"+{summary['accuracy_delta_points']} accuracy" in line and f"{summary['requests_per_s']} req/s" in line
    assert f"{summary['default_archive_requests_per_s']} req/s | {summary['speedup_vs_default_archive']}×" in line


def test_gpu_figures_against_torch_compile_are_the_committed_runs():
    table = readme_section("Results")
    run = RESULTS / "h100_inprocess_after_relayout"
    grid = {(r["model"], r["variant"], r["batch"], r["seq"]): r for r in csv.DictReader((run / "gpu_grid.csv").open())}
    anchor = {(r["variant"], r["batch"], r["seq"]): r for r in json.loads((run / "anchor.json").read_text())["results"]}
    ours_ms, compiled_ms = float(grid["bert_base", "graphs", "1", "128"]["ms"]), anchor["compile-reduce-overhead-fp16", 1, 128]["ms"]
    line = row_of(table, "H100, BERT-base 1×128")
    assert f"| {ours_ms} | `torch.compile" in line and f"fp16: {compiled_ms} | {compiled_ms / ours_ms:.2f}× faster" in line
    ours_rate, compiled_rate = float(grid["bert_base", "graphs", "128", "128"]["seq_per_s"]), anchor["compile-reduce-overhead-fp16", 128, 128]["seq_per_s"]
    line = row_of(table, "H100, BERT-base 128×128")
    assert f"| {ours_rate:,.0f} |" in line and f"fp16: {compiled_rate:,.0f} | {ours_rate / compiled_rate:.2f}×" in line


def test_default_model_accuracy_is_the_committed_runs():
    rows = {row["variant"]: row for row in csv.DictReader((RESULTS / "cpu_2core" / "cpu_inprocess.csv").open())}
    fp32, int8 = float(rows["torch_pad_longest"]["accuracy"]), float(rows["ort_static_int8_sub8"]["accuracy"])
    assert f"test accuracy {fp32:.3f} in fp32 and {int8:.3f} for the shipped int8 path" in readme_section("Two commands")
