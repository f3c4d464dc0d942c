"""The Chinese students' figures in docs/models-and-training.md are their committed training reports'; the gate's
verdicts follow from the budget."""

from __future__ import annotations

import json

from tests.documentation import REPO, published_text

RESULTS = REPO / "training" / "results" / "compression_zh"


def test_the_gate_verdicts_follow_the_budget_and_the_docs_quote_each_report():
    text = published_text()
    reports = {path.stem: json.loads(path.read_text()) for path in RESULTS.glob("*.json")}
    assert set(reports) == {"l1_f256-refused", "l1_f256_s1500-refused", "l2_f128"}
    for name, report in reports.items():
        record = report["compression"]
        delta = round((record["student_score"] - record["teacher_score"]) * 100, 2)
        assert report["refused"] is (delta < -record["budget_points"]) is name.endswith("-refused"), name
        sign = "+" if delta >= 0 else "−"
        row = f"| {record['parameters_student']:,} | {record['distillation_steps']}"
        assert row in text and f"| {record['student_score']:.4f} | {sign}{abs(delta):.2f} points |" in text, name
