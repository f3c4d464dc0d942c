"""Every door answers the same request the same way: TorchServe's /predictions, KServe v1, KServe v2 over REST
and v2 over gRPC (through tritonclient, a client nobody in this project wrote), on a single-label and a
multi-label model. The same options give the same answer; the same bad input gets the same message, with
each protocol's status (HTTP 400 / gRPC INVALID_ARGUMENT)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
import requests

from harness.kserve import running_kserve
from tests.integration.oip_client import triton_grpc
from harness.torchserve import TorchServe

TEXT = "the staff were lovely but the room was cold and the wifi never worked"
DOORS = ("torchserve", "kserve-v1", "kserve-v2-rest", "kserve-v2-grpc")


@dataclass(frozen=True)
class Rejected:
    """A refused request: its status (HTTP code, or gRPC status name) and message."""

    status: int | str
    message: str


@pytest.fixture(scope="module")
def servers(tiny_model_store, multi_label_model, tmp_path_factory):
    """One TorchServe with the single-label (bert_trt) and a multi-label archive, and one KServe server per archive."""
    import build_mar
    from export.mar import build_mar as build_archive

    multi_checkpoint, multi_export = multi_label_model
    store = tmp_path_factory.mktemp("doors_store")
    shutil.copy2(tiny_model_store / "bert_trt.mar", store / "bert_trt.mar")
    build_archive(build_mar.parse_args(["--checkpoint", str(multi_checkpoint), "--export-dir", str(multi_export), "--out", str(store),
                                        "--model-name", "multi_label", "--min-workers", "1", "--max-workers", "1"]))  # fmt: skip
    work = tmp_path_factory.mktemp("doors")
    torchserve = TorchServe(workdir=work / "ts", model_store=store, models=["bert_trt=bert_trt.mar", "multi_label=multi_label.mar"])
    with torchserve.running(), running_kserve(store / "bert_trt.mar", work / "ks") as single, running_kserve(store / "multi_label.mar", work / "ks", "multi_label") as multi:
        yield {"torchserve": torchserve, "bert_trt": single, "multi_label": multi}


def ask(servers, door: str, model: str, options: dict):
    """The answer for TEXT with `options` through `door`, in TorchServe's JSON shape, or `Rejected`."""
    if door == "torchserve":
        response = servers["torchserve"].predict({"text": TEXT, **options}, model_name=model)
        return response.json() if response.status_code == 200 else Rejected(response.status_code, response.json()["error"])
    kserve = servers[model]
    if door == "kserve-v1":
        response = requests.post(f"{kserve.http_url}/v1/models/{model}:predict", json={"instances": [{"text": TEXT, **options}]}, timeout=60)
        return response.json()["predictions"][0] if response.status_code == 200 else Rejected(response.status_code, response.json()["error"])
    if door == "kserve-v2-rest":
        body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}], "parameters": options}
        response = requests.post(f"{kserve.http_url}/v2/models/{model}/infer", json=body, timeout=60)
        if response.status_code != 200:
            return Rejected(response.status_code, response.json()["error"])
        outputs = {output["name"]: output for output in response.json()["outputs"]}
        return v2_as_answer({name: np.array(output["data"]).reshape(output["shape"]) for name, output in outputs.items()},
                            {name: output.get("parameters") or {} for name, output in outputs.items()}, response.json()["parameters"]["backend"])  # fmt: skip
    return grpc_answer(kserve.grpc_address, model, options)


def grpc_answer(address: str, model: str, options: dict):
    reply = triton_grpc(address=address, model=model, texts=[TEXT], parameters=options)
    if "error" in reply:
        return Rejected(reply["error"]["status"], reply["error"]["message"])
    outputs = reply["outputs"]
    return v2_as_answer({name: np.array(output["data"]).reshape(output["shape"]) for name, output in outputs.items()},
                        {name: output["parameters"] for name, output in outputs.items()}, reply["parameters"]["backend"])  # fmt: skip


def v2_as_answer(arrays: dict, parameters: dict, backend: str) -> dict:
    """v2 outputs of one text rewritten in TorchServe's JSON shape, for comparison."""
    labels = json.loads(parameters["probabilities"]["labels"])
    text = lambda value: value.decode() if isinstance(value, bytes) else str(value)  # noqa: E731
    answer = {
        "label": text(arrays["label"][0]), "score": float(arrays["score"][0]),
        "probabilities": dict(zip(labels, map(float, arrays["probabilities"][0]))),
        "truncated": bool(arrays["truncated"][0]), "tokens": int(arrays["tokens"][0]), "backend": backend,
    }  # fmt: skip
    if "predicted" in arrays:
        answer["labels"] = [label for label, on in zip(labels, arrays["predicted"][0]) if on]
        answer["threshold"] = float(parameters["predicted"]["threshold"])
    if "top_k_labels" in arrays:
        answer["top_k"] = [{"label": text(label), "score": float(score)} for label, score in zip(arrays["top_k_labels"][0], arrays["top_k_scores"][0])]
    if "logits" in arrays:
        answer["logits"] = dict(zip(labels, map(float, arrays["logits"][0])))
    return answer


def assert_same_answer(got: dict, want: dict, door: str) -> None:
    assert set(got) == set(want), (door, sorted(got), sorted(want))
    for key in ("label", "truncated", "tokens", "backend", "labels", "threshold"):
        assert got.get(key) == want.get(key), (door, key, got.get(key), want.get(key))
    for key in ("probabilities", "logits"):
        if key in want:
            assert max(abs(got[key][label] - want[key][label]) for label in want[key]) <= 1e-4, (door, key)
    assert abs(got["score"] - want["score"]) <= 1e-4
    if "top_k" in want:
        assert [item["label"] for item in got["top_k"]] == [item["label"] for item in want["top_k"]], door
        assert max(abs(a["score"] - b["score"]) for a, b in zip(got["top_k"], want["top_k"])) <= 1e-4, door


ANSWERED = [
    ("bert_trt", {}),
    ("bert_trt", {"top_k": 2}),
    ("bert_trt", {"return_logits": True}),
    ("bert_trt", {"top_k": 5, "return_logits": True}),  # more than the 3 labels: all of them
    ("multi_label", {}),
    ("multi_label", {"threshold": 0.25}),
    ("multi_label", {"threshold": 0.75, "top_k": 1, "return_logits": True}),
]


@pytest.mark.parametrize("door", DOORS[1:])
@pytest.mark.parametrize("model, options", ANSWERED, ids=[f"{m}-{json.dumps(o)}" for m, o in ANSWERED])
def test_options_are_answered_like_torchserve(servers, door, model, options):
    want = ask(servers, "torchserve", model, options)
    assert not isinstance(want, Rejected), want
    got = ask(servers, door, model, options)
    assert not isinstance(got, Rejected), got
    assert_same_answer(got, want, door)
    if "top_k" in options:
        assert len(got["top_k"]) == min(options["top_k"], len(want["probabilities"]))
    if model == "multi_label":
        assert got["threshold"] == options.get("threshold", 0.5)


REFUSED = [
    ("bert_trt", {"top_k": 0}, "top_k must be a positive integer, got 0"),
    ("bert_trt", {"return_logits": "yes"}, "return_logits must be true or false, got 'yes'"),
    ("bert_trt", {"threshold": 0.3}, "threshold applies to multi-label models only"),
    ("bert_trt", {"bogus": 1}, "unknown fields ['bogus']"),
    ("multi_label", {"threshold": 1.5}, "threshold must be a number from 0 to 1, got 1.5"),
]


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("model, options, message", REFUSED, ids=[f"{m}-{json.dumps(o)}" for m, o, _ in REFUSED])
def test_the_same_bad_input_gets_the_same_message_on_every_door(servers, door, model, options, message):
    got = ask(servers, door, model, options)
    assert isinstance(got, Rejected), got
    assert got.status == ("StatusCode.INVALID_ARGUMENT" if door == "kserve-v2-grpc" else 400), got
    assert message in got.message, got
    assert not isinstance(ask(servers, door, model, {}), Rejected)  # the door keeps answering
