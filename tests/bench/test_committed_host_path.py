"""The published docs' (README + docs/) H200 host-path figures are the committed run's (bench/results/h200_host_path/host_path.json)."""

from __future__ import annotations

import json
from pathlib import Path
from tests.documentation import published_text

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench/results/h200_host_path/host_path.json"


def thousands(value: float) -> str:
    """A req/s or texts/s figure as the README writes it (41,443)."""
    return f"{round(value):,}"


def test_readme_quotes_the_committed_host_path_run():
    report = json.loads(RESULTS.read_text())
    readme = published_text()
    for key in ("backend_texts_per_s_b64", "handler_texts_per_s_b64", "handler_plus_worker_protocol_texts_per_s_b64",
                "handler_texts_per_s_b64_baseline_same_run", "kserve_rps_best", "torchserve_rps_best", "torchserve_rps_baseline_same_run"):  # fmt: skip
        assert thousands(report[key]) in readme, key
    assert f"{report['torchserve_speedup_vs_baseline']:.2f}× at the best" in readme
    default = next(row for row in report["torchserve_rows"] if row["config"] == "ours b64 d1 w4" and row["concurrency"] == 768)
    baseline = max(row["throughput_rps"] for row in report["torchserve_rows"] if row["archive"] == "baseline")
    assert f"**{default['throughput_rps'] / baseline:.2f}× the baseline archive** at the GPU default" in readme
    c1 = next(row for row in report["torchserve_rows"] if row["config"] == "ours b64 d1 w4" and row["concurrency"] == 1)
    assert f"**{c1['p50_ms']:.2f} ms**" in readme and f"p50 {c1['p50_ms']:.1f} ms instead of {report['p50_ms_c1_torchserve_baseline']:.1f} ms" in readme
    assert all(row["errors"] == 0 for row in report["torchserve_rows"] + report["kserve_rows"])
    assert report["max_abs_dp_vs_baseline"] <= 1e-4
