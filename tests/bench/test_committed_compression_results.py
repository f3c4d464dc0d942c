"""The published served-student figures (README + docs/) are those of the committed run (bench/results/cpu_2core/compression.json)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.documentation import published_text, readme_section

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "cpu_2core"
VARIANTS = {"stock", "teacher/fp32", "default", "l3_f768/fp32", "l3_f768/int8", "l4_f768/fp32", "l4_f768/int8"}


def signed(points: float) -> str:
    """Accuracy points as the docs write them: 0, +0.6, −0.11."""
    return "0" if points == 0 else f"{'+' if points > 0 else '−'}{abs(points):g}"


def test_the_recommended_student_meets_the_goal_the_docs_state():
    summary = json.loads((RESULTS / "compression.json").read_text())
    assert summary["recommended"] == "l3_f768/int8" and summary["goal_met"] is True
    assert summary["speedup_vs_default_archive"] >= summary["goal"]["speedup_vs_default_archive"] == 2.0
    assert summary["accuracy_delta_points"] >= -summary["budget_points"] and summary["batch_invariance_max_abs"] <= 1e-4
    rows = {row["variant"]: row for row in csv.DictReader((RESULTS / "compression_pareto.csv").open())}
    assert set(rows) == VARIANTS and all(row["status"] == "ok" for row in rows.values())
    assert float(rows["l3_f768/int8"]["requests_per_s"]) == summary["requests_per_s"]
    text = published_text()
    figures = [f"{summary['speedup_vs_default_archive']}×", f"+{summary['accuracy_delta_points']} accuracy",
               f"{summary['requests_per_s']} vs {summary['default_archive_requests_per_s']}"]  # fmt: skip
    assert all(figure in text for figure in figures), [figure for figure in figures if figure not in text]


def test_every_row_of_the_docs_pareto_table_is_the_committed_csv():
    text = published_text()
    for row in csv.DictReader((RESULTS / "compression_pareto.csv").open()):
        if row["variant"] == "stock":
            continue
        cells = f"| {row['accuracy']} | {signed(float(row['accuracy_delta_points']))} | {row['requests_per_s']} | {float(row['speedup_vs_default_archive']):.2f} |"
        assert cells in text.replace("**", ""), f"{row['variant']}: {cells}"


def test_the_readme_results_row_is_the_recommended_student():
    summary = json.loads((RESULTS / "compression.json").read_text())
    row = [line for line in readme_section("Results").splitlines() if "distilled student" in line]
    assert len(row) == 1 and f"+{summary['accuracy_delta_points']} accuracy points" in row[0]
    assert f"| {summary['requests_per_s']} req/s | the default archive: {summary['default_archive_requests_per_s']} req/s | {summary['speedup_vs_default_archive']}× |" in row[0]


def test_the_quiet_in_process_ratio_the_docs_quote():
    rows = {row["variant"]: row for row in map(json.loads, (RESULTS / "compression_inprocess_quiet.jsonl").read_text().splitlines())}
    ratio = rows["l3_f768/int8"]["texts_per_s"] / rows["default"]["texts_per_s"]
    assert f"{rows['l3_f768/int8']['texts_per_s']} vs {rows['default']['texts_per_s']} texts/s ({ratio:.2f}×)" in published_text()
