"""Our KServe server for real (`python -m kserve_server` on free loopback ports, the tests' .mar): the in-flight
gauge the raw-deployment autoscaler scales on, and no management API on the serving port (REST or gRPC)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

from harness.kserve import running_kserve

pytestmark = pytest.mark.integration

#: the first batch waits this long for more requests (the archive's batch is 16 texts): long enough to scrape /metrics
#: while the test's requests are held
HOLD_MS = 3000
IN_FLIGHT = re.compile(r'^bert_trt_in_flight_requests\{model="bert_trt"\} (\S+)$', re.M)


@pytest.fixture(scope="module")
def kserve(tiny_model_store, tmp_path_factory):
    """The KServe server on the tests' archive, holding each batch up to HOLD_MS for a fuller one."""
    with running_kserve(tiny_model_store / "bert_trt.mar", tmp_path_factory.mktemp("kserve_metrics"), extra=("--max-delay-ms", str(HOLD_MS))) as server:
        yield server


def in_flight(url: str) -> float:
    """bert_trt_in_flight_requests from the server's /metrics."""
    match = IN_FLIGHT.search(requests.get(f"{url}/metrics", timeout=10).text)
    assert match, "bert_trt_in_flight_requests is missing from /metrics"
    return float(match.group(1))


def test_in_flight_gauge_counts_requests_until_they_are_answered(kserve):
    url = kserve.http_url
    assert in_flight(url) == 0
    v1 = lambda text: requests.post(f"{url}/v1/models/bert_trt:predict", json={"instances": [text]}, timeout=60)  # noqa: E731
    v2_body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["held in the batcher"]}]}
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = [pool.submit(v1, "one held request"), pool.submit(v1, "another one"),
                   pool.submit(requests.post, f"{url}/v2/models/bert_trt/infer", json=v2_body, timeout=60)]  # fmt: skip
        seen, deadline = [], time.monotonic() + HOLD_MS / 1000 - 0.5
        while time.monotonic() < deadline and (not seen or seen[-1] < 3):
            seen.append(in_flight(url))
            time.sleep(0.1)
        statuses = [answer.result().status_code for answer in answers]
    assert statuses == [200, 200, 200]
    assert max(seen) == 3, f"while three requests (v1, v1, v2) waited for their batch the gauge read {seen}"
    assert in_flight(url) == 0, "every request was answered: nothing is in flight"


def test_no_management_api_on_the_serving_port(kserve):
    """Every route KServe's app lists that is not a read (GET) is an inference route or is refused with 404
    (KServe's model-repository load / unload); TorchServe-style management paths do not exist; the model
    keeps answering. A route a KServe upgrade adds that changes state fails here."""
    url = kserve.http_url
    paths = requests.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    changing = sorted((path, method.upper()) for path, methods in paths.items() for method in methods if method not in ("get", "head"))
    inference = [(path, method) for path, method in changing if re.search(r"(:predict|:explain|/infer)$", path)]
    management = [(path, method) for path, method in changing if (path, method) not in inference]
    assert inference and management == [("/v2/repository/models/{model_name}/load", "POST"), ("/v2/repository/models/{model_name}/unload", "POST")]
    for path, method in management:
        refused = requests.request(method, url + path.format(model_name="bert_trt"), timeout=10)
        assert refused.status_code == 404 and "no management API" in refused.json()["error"], refused.text
    for method in ("POST", "PUT", "DELETE"):
        assert requests.request(method, f"{url}/models/bert_trt", timeout=10).status_code in (404, 405)
    assert requests.get(f"{url}/v2/models/bert_trt/ready", timeout=10).status_code == 200
    assert requests.post(f"{url}/v1/models/bert_trt:predict", json={"instances": ["still served"]}, timeout=60).status_code == 200


def test_grpc_repository_calls_are_refused_and_the_model_stays_loaded(kserve):
    with grpc.insecure_channel(kserve.grpc_address) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        for call, request in ((stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="bert_trt")),
                              (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="bert_trt"))):  # fmt: skip
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "no management API" in refused.value.details()
        assert stub.ModelReady(pb.ModelReadyRequest(name="bert_trt"), timeout=10).ready
