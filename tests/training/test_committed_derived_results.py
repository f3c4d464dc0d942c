"""The published docs' (README + docs/) derived-task figures and the H200 pair-test count are the committed runs' own."""

from __future__ import annotations

import json
import re
from pathlib import Path
from tests.documentation import published_text

REPO = Path(__file__).resolve().parents[2]


def test_readme_quotes_the_committed_derived_task_results():
    results = json.loads((REPO / "training/results/derived_tasks.json").read_text())
    readme = published_text()
    pair, regression = results["en-same-polarity"], results["en-confidence"]
    assert f"| `en-same-polarity` | {pair['steps']} | {round(pair['seconds'])} | accuracy {pair['test']['accuracy']:.3f}" in readme
    assert f"(dev {pair['dev']['accuracy']:.3f} / {pair['dev']['macro_f1']:.3f})" in readme
    assert f"| `en-confidence` | {regression['steps']} | {round(regression['seconds'])} | Pearson {regression['test']['pearson']:.3f}, Spearman {regression['test']['spearman']:.3f}" in readme
    assert all(result["derived"].endswith("not GLUE") for result in results.values())
    for task, result in results.items():
        train, dev, test = (f"{result['rows'][split]:,}" for split in ("train", "dev", "test"))
        assert f"{train} / {dev} / {test} |" in readme, task


def test_readme_quotes_the_committed_gpu_pair_test_log():
    log = (REPO / "bench/results/h200_pairs/gpu_tests_pairs.log").read_text()
    passed = int(re.search(r"(\d+) passed", log).group(1))
    assert "failed" not in log and f"{passed} GPU tests passed on the H200" in published_text()
