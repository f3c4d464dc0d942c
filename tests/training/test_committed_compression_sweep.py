"""The published docs' (README + docs/) compression figures are the committed sweep's (bench/results/compression_sweep_h200/)."""

from __future__ import annotations

import json
from pathlib import Path

from training.compress import CompressionPlan
from tests.documentation import published_text

SWEEP = Path(__file__).resolve().parents[2] / "bench" / "results" / "compression_sweep_h200" / "sweep.jsonl"


def test_the_default_settings_are_the_swept_row_the_readme_quotes():
    rows = [json.loads(line) for line in SWEEP.read_text().splitlines()]
    assert len(rows) == 11 and all(row["teacher_test"]["accuracy"] == 0.7648 for row in rows)
    plan = CompressionPlan(layers=3, intermediate_size=768)
    chosen = {"layers": 3, "intermediate_size": 768, "steps": plan.steps, "learning_rate": plan.learning_rate,
              "temperature": plan.temperature, "soft_weight": plan.soft_weight}  # fmt: skip
    (row,) = [row for row in rows if row["cfg"] == chosen]
    assert row["test"]["accuracy"] == 0.774 and round(row["dev"]["accuracy"], 3) == 0.782 and row["kept"] == [0, 3, 5]
    (old,) = [row for row in rows if row["cfg"] == {"layers": 3, "intermediate_size": 768, "steps": 600, "learning_rate": 1e-4}]
    assert round(old["test"]["accuracy"], 3) == 0.755
    readme = published_text()
    assert "**0.774**" in readme and "scores 0.755" in readme
