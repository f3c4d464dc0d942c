"""The published docs' (README + docs/) served-student figures are those of the committed run (bench/results/cpu_2core/compression.json)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from tests.documentation import published_text

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "cpu_2core"


def test_the_recommended_student_meets_the_goal_the_readme_states():
    summary = json.loads((RESULTS / "compression.json").read_text())
    assert summary["recommended"] == "l3_f768/int8" and summary["goal_met"] is True
    assert summary["speedup_vs_default_archive"] >= summary["goal"]["speedup_vs_default_archive"] == 2.0
    assert summary["accuracy_delta_points"] >= -summary["budget_points"] and summary["batch_invariance_max_abs"] <= 1e-4
    rows = {row["variant"]: row for row in csv.DictReader((RESULTS / "compression_pareto.csv").open())}
    assert set(rows) == {"stock", "teacher/fp32", "default", "l3_f768/fp32", "l3_f768/int8"}
    assert float(rows["l3_f768/int8"]["requests_per_s"]) == summary["requests_per_s"]
    readme = published_text()
    figures = [f"{summary['speedup_vs_default_archive']}×", f"+{summary['accuracy_delta_points']} accuracy",
               f"{summary['requests_per_s']} vs {summary['default_archive_requests_per_s']}",
               f"{float(rows['l3_f768/fp32']['speedup_vs_default_archive']):.1f}× the default"]  # fmt: skip
    assert all(figure in readme for figure in figures), [figure for figure in figures if figure not in readme]


def test_the_quiet_in_process_ratio_the_readme_quotes():
    rows = {row["variant"]: row for row in map(json.loads, (RESULTS / "compression_inprocess_quiet.jsonl").read_text().splitlines())}
    ratio = rows["l3_f768/int8"]["texts_per_s"] / rows["default"]["texts_per_s"]
    readme = published_text()
    assert f"{rows['l3_f768/int8']['texts_per_s']} vs {rows['default']['texts_per_s']} texts/s ({ratio:.2f}×)" in readme
