"""`python -m kserve_server --workers 2`: two processes on one HTTP and one gRPC port, each with its own
model; answers equal the reference, /metrics merges both, a killed worker is restarted while the other
answers, SIGTERM stops them all."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness.kserve import running_kserve
from tests.integration.oip_client import triton_grpc

pytestmark = pytest.mark.integration


def live_worker_pids(url: str) -> set[int]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {int(pid) for pid in re.findall(r'^bert_trt_active_backend\{[^}]*pid="(\d+)"[^}]*\} 1\.0$', text, re.M)}


def wait_for_pids(url: str, count: int, timeout: float = 180, without: set[int] = frozenset()) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = live_worker_pids(url) - set(without)
        if len(pids) == count:
            return pids
        time.sleep(0.5)
    raise AssertionError(f"never saw {count} live workers; last: {live_worker_pids(url)}")


def is_running(pid: int) -> bool:
    """Whether any thread of process `pid` still runs (a zombie leader may still have exiting threads)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1 or "zombie" not in open(f"/proc/{pid}/status").read().lower()
    except FileNotFoundError:
        return False


def counter(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(float(value) for value in re.findall(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M))


def test_two_workers_share_the_ports_merge_metrics_and_survive_a_crash(tiny_model_store, tmp_path, reference_classifier):
    texts = [f"the parcel number {i} arrived {'late' if i % 2 else 'early'}" for i in range(60)]
    expected = {text: answer for text, answer in zip(texts, reference_classifier.classify(texts))}
    with running_kserve(tiny_model_store / "bert_trt.mar", tmp_path, extra=("--workers", "2")) as server:
        url = server.http_url
        pids = wait_for_pids(url, 2)

        def predict(text: str) -> dict:
            with requests.Session() as session:  # a connection per request: SO_REUSEPORT spreads connections
                response = session.post(f"{url}/v1/models/bert_trt:predict", json={"instances": [text]}, timeout=60)
            assert response.status_code == 200, response.text
            return response.json()["predictions"][0]

        with ThreadPoolExecutor(8) as pool:
            answers = dict(zip(texts, pool.map(predict, texts)))
        assert all(answers[text]["label"] == expected[text]["label"] for text in texts)
        assert max(abs(answers[text]["score"] - expected[text]["score"]) for text in texts) <= 1e-4
        assert counter(url, "bert_trt_cache_misses_total") == len(texts)  # both workers' counts, merged
        for _ in range(4):  # gRPC on the shared port too (tritonclient: a new channel each call)
            reply = triton_grpc(address=server.grpc_address, model="bert_trt", texts=texts[:3])
            assert reply["outputs"]["label"]["data"] == [expected[text]["label"] for text in texts[:3]]
        assert counter(url, "bert_trt_batch_texts_count") >= 2  # batches from more than one scrape target's worth

        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        # connections that reach its socket while its threads are still exiting are reset, as with any crash:
        # send again once the supervisor has reaped it (its whole thread group gone, its socket closed)
        deadline = time.monotonic() + 30
        while "exited with status -9; restarting it" not in server.log.read_text():
            assert time.monotonic() < deadline, "the supervisor never saw its worker die"
            time.sleep(0.1)
        with ThreadPoolExecutor(4) as pool:  # the other worker answers while the supervisor restarts this one
            again = list(pool.map(predict, texts[:20]))
        assert [answer["label"] for answer in again] == [expected[text]["label"] for text in texts[:20]]
        restarted = wait_for_pids(url, 2, without={victim})
        assert victim not in restarted and len(restarted & pids) == 1


def test_workers_stop_together_on_sigterm(tiny_model_store, tmp_path):
    with running_kserve(tiny_model_store / "bert_trt.mar", tmp_path, extra=("--workers", "2"), grpc=False) as server:
        pids = wait_for_pids(server.http_url, 2)
        os.kill(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(is_running(pid) for pid in pids):
            time.sleep(0.5)
        assert not any(is_running(pid) for pid in pids)
        assert not is_running(server.pid)
