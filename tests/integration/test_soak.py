"""A short soak in CI (bench/soak.py runs the long one): steady mixed load, no unexpected answer."""

from __future__ import annotations

import pytest

from bench.soak import run_soak
from harness.torchserve import TorchServe


@pytest.mark.slow
def test_short_soak_of_mixed_requests_has_no_unexpected_answer(tiny_model_store, tmp_path, record_property):
    with TorchServe(workdir=tmp_path, model_store=tiny_model_store).running() as server:
        report = run_soak(server, seconds=40, concurrency=4)
    summary = {k: v for k, v in report.items() if k != "samples"}
    record_property("soak", summary)
    print(f"\nsoak: {summary}")
    assert report["requests"] > 200 and report["bad_requests_sent"] > 20
    assert report["unexpected"] == 0, report["unexpected_examples"]
    assert all(sample["worker_rss_mib"] > 0 for sample in report["samples"])
