"""Token lifecycle and health probes against a real TorchServe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from harness.torchserve import TorchServe
from ops import health
from ops.keys import read_keys, renew_key


@pytest.mark.slow
def test_keys_renewed_before_they_expire_keep_our_client_working(tiny_model_store, tmp_path, record_property):
    """1-minute keys: the renewer keeps the inference key fresh and our client (which re-reads the key and
    retries once) never fails; the replaced key is refused; the management key, left to expire, is refused
    until the API key renews it."""
    with TorchServe(workdir=tmp_path, model_store=tiny_model_store, overrides={"token_expiration_min": "1"}).running(renew_keys=False) as server:
        first = read_keys(tmp_path)
        assert 45 < first["inference"].seconds_left() <= 61
        server.start_key_renewer(kinds=("inference",))
        statuses = []
        while first["management"].seconds_left() > -5:
            statuses.append(server.predict("still answering?").status_code)
            time.sleep(1)
        assert statuses and set(statuses) == {200}, statuses
        now = read_keys(tmp_path)
        assert now["inference"].value != first["inference"].value and now["inference"].seconds_left() > 0
        url = f"{server.inference_url}/predictions/bert_trt"
        replaced = requests.post(url, data=b"hi", headers={"Authorization": f"Bearer {first['inference'].value}", "Content-Type": "text/plain"}, timeout=10)
        assert replaced.status_code == 400 and "InvalidKeyException" in replaced.text
        expired = requests.get(f"{server.management_url}/models", headers={"Authorization": f"Bearer {first['management'].value}"}, timeout=10)
        assert expired.status_code == 400 and "InvalidKeyException" in expired.text
        assert renew_key(server.management_url, tmp_path, "management") != first["management"].value
        assert server.request("GET", f"{server.management_url}/models", "management").status_code == 200
        record_property("token_renewal", f"{len(statuses)} requests over {len(statuses)} s with 1-minute keys, all 200")


@pytest.fixture(scope="module")
def api_server(tiny_model_store, tmp_path_factory):
    with TorchServe(workdir=tmp_path_factory.mktemp("ts_health"), model_store=tiny_model_store, enable_model_api=True).running() as server:
        yield server


def probe(server: TorchServe, *args: str) -> subprocess.CompletedProcess:
    """`python -m ops.health ...` as an orchestrator runs it: no token on the command line, no Authorization header."""
    return subprocess.run([sys.executable, "-m", "ops.health", *args, "--config", str(server.write_config()), "--key-dir", str(server.workdir)],
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def test_ping_needs_a_token_but_the_probes_do_not(api_server):
    assert requests.get(f"{api_server.inference_url}/ping", timeout=5).status_code == 400  # why the probes avoid /ping
    live, ready = probe(api_server, "live"), probe(api_server, "ready")
    assert live.returncode == 0 and '"healthy": true' in live.stdout, live.stdout + live.stderr
    assert ready.returncode == 0 and json.loads(ready.stdout)["ready_workers"]["bert_trt"] >= 1, ready.stdout + ready.stderr


def test_a_model_still_loading_is_not_ready_then_ready(api_server):
    management = api_server.management_url
    response = api_server.request("POST", f"{management}/models?url=bert_trt.mar&model_name=loading&initial_workers=1&synchronous=false", "management", timeout=30)
    assert response.status_code == 202, response.text
    try:
        first = health.ready(management, api_server.workdir, ["loading"])
        assert not first.healthy and "loading" in first.detail
        assert probe(api_server, "ready", "--model", "loading").returncode == 1
        deadline = time.monotonic() + 120
        while not health.ready(management, api_server.workdir, ["loading"]).healthy:
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.5)
        assert api_server.predict("now it answers", model_name="loading").status_code == 200
    finally:
        api_server.request("DELETE", f"{management}/models/loading", "management", timeout=60)


def test_dead_workers_make_the_model_not_ready_until_one_is_back(api_server, record_property):
    """Ready = at least one worker can answer: killing every worker of the model makes it not ready."""
    for worker in api_server.describe("bert_trt")["workers"]:
        os.kill(int(worker["pid"]), signal.SIGKILL)
    killed_at = time.monotonic()
    seen_not_ready = False
    while time.monotonic() - killed_at < 120:
        verdict = health.ready(api_server.management_url, api_server.workdir, ["bert_trt"])
        seen_not_ready |= not verdict.healthy
        if seen_not_ready and verdict.healthy:
            break
        time.sleep(0.2)
    back_after = time.monotonic() - killed_at
    assert seen_not_ready, "the readiness probe never noticed the dead worker"
    assert verdict.healthy, "not ready again within 120 s"
    assert health.live(api_server.inference_url).healthy  # the frontend stayed up throughout
    record_property("ready_again_after_kill_s", round(back_after, 1))


def test_liveness_fails_once_the_server_is_gone(tiny_model_store, tmp_path):
    server = TorchServe(workdir=tmp_path, model_store=tiny_model_store).start(renew_keys=False)
    assert health.live(server.inference_url).healthy
    assert not server.stop()
    verdict = health.live(server.inference_url, timeout=2)
    assert not verdict.healthy and "no answer" in verdict.detail
    assert probe(server, "live").returncode == 1
