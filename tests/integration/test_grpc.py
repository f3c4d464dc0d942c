"""Both gRPC doors with clients nobody in this project wrote.

KServe's OIP v2 gRPC (`GRPCInferenceService` on --grpc-port) through tritonclient: readiness, metadata, a
batch with a Chinese text, label names, options as parameters, bad input -> INVALID_ARGUMENT, and the
server still answering afterwards.

TorchServe's gRPC inference door (7070 in config.properties; a free port here) through stubs generated at
test time from the protos inside TorchServe's own jar: with and without the key, a Chinese text, and a bad
payload, which TorchServe 0.12 answers with gRPC status OK and the handler's error JSON (with "code": 400)
in the prediction bytes: the per-request 4xx does not become a gRPC status there (docs/api.md ("gRPC")).
"""

from __future__ import annotations

import importlib
import json
import sys
import zipfile
from pathlib import Path

import grpc
import pytest

from harness.kserve import running_kserve
from tests.integration.oip_client import triton_grpc

TEXTS = ["what a wonderful little hotel", "这家酒店的服务非常好,房间也很干净", "it is a chair"]


@pytest.fixture(scope="module")
def kserve_grpc(tiny_model_store, tmp_path_factory):
    with running_kserve(tiny_model_store / "bert_trt.mar", tmp_path_factory.mktemp("kserve_grpc")) as server:
        yield server


def test_kserve_grpc_is_ready_and_describes_the_model(kserve_grpc):
    assert triton_grpc(address=kserve_grpc.grpc_address, model="bert_trt", call="ready") == {"server_ready": True, "model_ready": True}
    metadata = triton_grpc(address=kserve_grpc.grpc_address, model="bert_trt", call="metadata")
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": ["-1"]}]
    assert metadata["outputs"] == ["label", "score", "probabilities", "truncated", "tokens"]


def test_kserve_grpc_classifies_a_batch_like_the_in_process_reference(kserve_grpc, reference_classifier):
    reply = triton_grpc(address=kserve_grpc.grpc_address, model="bert_trt", texts=TEXTS, parameters={"top_k": 2})
    outputs = reply["outputs"]
    labels = json.loads(outputs["probabilities"]["parameters"]["labels"])
    assert labels == reference_classifier.labels and outputs["probabilities"]["shape"] == [len(TEXTS), len(labels)]
    expected = reference_classifier.classify(TEXTS)
    for i, want in enumerate(expected):
        row = outputs["probabilities"]["data"][i * len(labels) : (i + 1) * len(labels)]
        assert outputs["label"]["data"][i] == want["label"] and outputs["tokens"]["data"][i] == want["tokens"]
        assert max(abs(p - want["probabilities"][label]) for label, p in zip(labels, row)) <= 1e-4
    assert outputs["top_k_labels"]["shape"] == [len(TEXTS), 2] and outputs["top_k_labels"]["data"][0] == expected[0]["label"]
    assert reply["parameters"]["backend"] == "onnxruntime"


@pytest.mark.parametrize(
    "texts, parameters, message",
    [
        (["fine", "  "], {}, "text at index 1 is empty"),
        (["x"] * 300, {}, "too many texts in one request: 300 > 256"),
        (["fine"], {"top_k": -1}, "top_k must be a positive integer, got -1"),
        (["fine"], {"temperature": 0.5}, "unknown fields ['temperature']"),
    ],
)
def test_kserve_grpc_refuses_bad_input_with_invalid_argument_and_keeps_answering(kserve_grpc, texts, parameters, message):
    reply = triton_grpc(address=kserve_grpc.grpc_address, model="bert_trt", texts=texts, parameters=parameters)
    assert reply["error"]["status"] == "StatusCode.INVALID_ARGUMENT" and message in reply["error"]["message"], reply
    after = triton_grpc(address=kserve_grpc.grpc_address, model="bert_trt", texts=["still answering"])
    assert after["outputs"]["label"]["shape"] == [1]


@pytest.fixture(scope="module")
def torchserve_stubs(tmp_path_factory):
    """(inference_pb2, inference_pb2_grpc) generated from the inference.proto inside TorchServe's jar."""
    import google.rpc
    import ts
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("ts_stubs")
    with zipfile.ZipFile(Path(ts.__file__).parent / "frontend" / "model-server.jar") as jar:
        (out / "inference.proto").write_bytes(jar.read("proto/inference.proto"))
    common = Path(google.rpc.__path__[0]).parent.parent  # where google/rpc/status.proto lies
    well_known = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(["protoc", f"-I{out}", f"-I{common}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", str(out / "inference.proto")])
    assert code == 0, "protoc failed on TorchServe's inference.proto"
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("inference_pb2"), importlib.import_module("inference_pb2_grpc")
    finally:
        sys.path.remove(str(out))


def torchserve_predict(torchserve, stubs, body: bytes, key: str | None):
    pb, pb_grpc = stubs
    with grpc.insecure_channel(f"127.0.0.1:{torchserve.addresses['grpc_inference_port']}") as channel:
        stub = pb_grpc.InferenceAPIsServiceStub(channel)
        metadata = [("authorization", f"Bearer {key}")] if key else None
        return stub.Predictions(pb.PredictionsRequest(model_name="bert_trt", input={"data": body}), metadata=metadata, timeout=60)


def test_torchserve_grpc_answers_with_the_key_like_http(torchserve, torchserve_stubs, reference_classifier):
    for text in TEXTS[:2]:
        answer = json.loads(torchserve_predict(torchserve, torchserve_stubs, text.encode(), torchserve.token("inference")).prediction)
        want = reference_classifier.classify([text])[0]
        assert answer["label"] == want["label"] and answer["tokens"] == want["tokens"]
        assert max(abs(answer["probabilities"][label] - p) for label, p in want["probabilities"].items()) <= 1e-4


@pytest.mark.parametrize("key", [None, "not-the-key"])
def test_torchserve_grpc_refuses_calls_without_the_key(torchserve, torchserve_stubs, key):
    with pytest.raises(grpc.RpcError) as refused:
        torchserve_predict(torchserve, torchserve_stubs, b"hello", key)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
    assert "Token Authorization failed" in refused.value.details()


def test_torchserve_grpc_answers_a_bad_payload_with_status_ok_and_the_error_json(torchserve, torchserve_stubs):
    """Documented behaviour of TorchServe 0.12 (not ours to change): the handler's 400 travels inside the reply."""
    reply = torchserve_predict(torchserve, torchserve_stubs, b'{"text": "fine", "top_k": 0}', torchserve.token("inference"))
    assert json.loads(reply.prediction) == {"error": "top_k must be a positive integer, got 0", "code": 400}
    assert json.loads(torchserve_predict(torchserve, torchserve_stubs, b"still answering", torchserve.token("inference")).prediction)["label"]
