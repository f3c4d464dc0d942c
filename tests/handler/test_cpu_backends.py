"""The CPU backends agree with each other, and sorting texts by length never reorders answers."""

import pytest
import torch

from handler.backends import OnnxRuntimeBackend, TorchCpuBackend
from handler.classifier import TextClassifier, load_tokenizer
from handler.selection import backend_order
from handler.spec import ModelSpec
from tests.tiny_model import model_dir_like_mar

TEXTS = ["a", "this one is a good deal longer than the others, with commas", "mid length text", "ok then", "x " * 60]


@pytest.fixture(scope="module")
def model_dir(tiny_checkpoint, tiny_export, tmp_path_factory):
    return model_dir_like_mar(tiny_checkpoint, tiny_export, tmp_path_factory.mktemp("cpu_backends"))


def classifier_for(model_dir, backend_class, **options):
    spec = ModelSpec.load(model_dir)
    return TextClassifier(load_tokenizer(model_dir), backend_class(model_dir, spec, {"num_threads": 1, **options}).load(), spec)


def test_onnxruntime_matches_torch(model_dir):
    torch_logits = classifier_for(model_dir, TorchCpuBackend).logits(TEXTS)
    ort_logits = classifier_for(model_dir, OnnxRuntimeBackend).logits(TEXTS)
    assert torch.allclose(torch_logits, ort_logits, atol=1e-4)


def test_sub_batches_sort_by_length_but_keep_order(model_dir):
    whole = classifier_for(model_dir, TorchCpuBackend).logits(TEXTS)
    chunked = classifier_for(model_dir, TorchCpuBackend, sub_batch=2)
    assert torch.allclose(chunked.logits(TEXTS), whole, atol=1e-5)
    assert chunked.last_timings.chunks == [2, 2, 1]


def test_torch_int8_stays_close(model_dir):
    fp32 = torch.softmax(classifier_for(model_dir, TorchCpuBackend).logits(TEXTS), -1)
    int8 = torch.softmax(classifier_for(model_dir, TorchCpuBackend, torch_int8=True).logits(TEXTS), -1)
    assert (fp32 - int8).abs().max() < 0.1


def test_onnxruntime_int8_runs_the_quantized_file(model_dir):
    classifier = classifier_for(model_dir, OnnxRuntimeBackend, onnx_int8=True)
    assert classifier.backend.describe()["model"] == "model.int8.onnx"
    probabilities = torch.softmax(classifier.logits(TEXTS), -1)
    assert torch.allclose(probabilities.sum(-1), torch.ones(len(TEXTS)), atol=1e-5)


def test_missing_int8_onnx_is_a_clear_refusal(model_dir):
    from handler.backends import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="model.int8.onnx"):
        OnnxRuntimeBackend(model_dir / "nowhere", ModelSpec.load(model_dir), {"onnx_int8": True}).load()


def test_backend_orders():
    assert backend_order("auto") == ["tensorrt", "torch_cuda", "onnxruntime", "torch_cpu"]
    assert backend_order("torch_cuda") == ["torch_cuda", "onnxruntime", "torch_cpu"]
    assert backend_order("onnxruntime") == ["onnxruntime", "torch_cpu"]
    with pytest.raises(ValueError, match="choose one of"):
        backend_order("tpu")


def test_a_backend_that_crashes_while_loading_falls_back(model_dir, monkeypatch):
    from handler.selection import choose_backend

    def broken(self):
        raise RuntimeError("corrupt model file")

    monkeypatch.setattr(OnnxRuntimeBackend, "_load_impl", broken)
    backend, skipped = choose_backend("onnxruntime", model_dir, ModelSpec.load(model_dir), {"num_threads": 1})
    assert backend.name == "torch_cpu"
    assert skipped == ["backend onnxruntime failed to load: RuntimeError: corrupt model file"]
