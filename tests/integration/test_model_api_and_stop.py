"""TorchServe with --enable-model-api: register / unregister; and a clean stop leaves no process behind."""

from __future__ import annotations

import psutil
import pytest
import requests

from harness.torchserve import TorchServe
from harness.models import LABELS


@pytest.fixture(scope="module")
def model_api_server(tiny_model_store, tmp_path_factory):
    with TorchServe(workdir=tmp_path_factory.mktemp("ts_api"), model_store=tiny_model_store, models=[], enable_model_api=True).running() as server:
        yield server


def test_register_predict_unregister(model_api_server):
    server = model_api_server
    headers = server.headers("management")
    register = requests.post(
        f"{server.management_url}/models?url=bert_trt.mar&model_name=bert_copy&initial_workers=1&synchronous=true",
        headers=headers,
        timeout=240,
    )
    assert register.status_code == 200, register.text
    prediction = server.predict("registered at runtime", model_name="bert_copy")
    assert prediction.status_code == 200 and prediction.json()["label"] in LABELS
    unregister = requests.delete(f"{server.management_url}/models/bert_copy", headers=headers, timeout=60)
    assert unregister.status_code == 200, unregister.text
    assert requests.get(f"{server.management_url}/models/bert_copy", headers=headers, timeout=10).status_code == 404
    assert server.predict("gone", model_name="bert_copy").status_code == 404


def test_remote_urls_are_not_allowed(model_api_server):
    response = requests.post(
        f"{model_api_server.management_url}/models?url=https://example.com/evil.mar",
        headers=model_api_server.headers("management"),
        timeout=30,
    )
    assert response.status_code in (400, 404), response.text
    assert "allowed" in response.text.lower()


def test_clean_stop_leaves_no_process(tiny_model_store, tmp_path):
    server = TorchServe(workdir=tmp_path, model_store=tiny_model_store).start()
    processes = list(server.process_tree)
    assert len(processes) >= 2, "expected the frontend and at least one worker"
    survivors = server.stop()
    assert survivors == []
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    assert server.predict.__self__ is server  # the object stays usable for inspection
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.inference_url}/ping", timeout=5)
