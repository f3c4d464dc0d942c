"""The CPU backends agree with each other, and sorting texts by length never reorders answers."""

import numpy as np
import pytest

from handler import layout
from handler.backends.selection import backend_order, choose_backend
from handler.errors import BackendUnavailable
from handler.backends.onnxruntime import OnnxRuntimeBackend
from handler.backends.torch_cpu import TorchCpuBackend
from handler.classifier import TextClassifier, softmax
from handler.settings import HandlerSettings, OnnxRuntimeOptions, TorchCpuOptions
from handler.spec import ModelSpec
from handler.tokenizer import load_tokenizer
from harness.models import model_dir_like_mar

TEXTS = ["a", "this one is a good deal longer than the others, with commas", "mid length text", "ok then", "x " * 60]


@pytest.fixture(scope="module")
def model_dir(tiny_checkpoint, tiny_export, tmp_path_factory):
    return model_dir_like_mar(tiny_checkpoint, tiny_export, tmp_path_factory.mktemp("cpu_backends"))


def classifier_for(model_dir, backend_class, **options):
    """A classifier over `backend_class` with one thread, the whole batch in one pass, fp32, unless `options` say otherwise."""
    spec = ModelSpec.load(model_dir)
    options = backend_class.options_class()(**{"num_threads": 1, "sub_batch": None, "int8": False, **options})
    return TextClassifier(load_tokenizer(model_dir), backend_class(model_dir, spec, options).load(), spec)


def test_a_backend_built_without_options_runs_the_servers_defaults(model_dir):
    spec = ModelSpec.load(model_dir)
    served = HandlerSettings.from_model_yaml({})
    assert OnnxRuntimeBackend(model_dir, spec).options == served.onnxruntime == OnnxRuntimeOptions()
    assert TorchCpuBackend(model_dir, spec).options == served.torch_cpu == TorchCpuOptions()
    with pytest.raises(TypeError, match="takes OnnxRuntimeOptions"):
        OnnxRuntimeBackend(model_dir, spec, TorchCpuOptions())


def test_onnxruntime_matches_torch(model_dir):
    torch_logits = classifier_for(model_dir, TorchCpuBackend).logits(TEXTS)
    ort_logits = classifier_for(model_dir, OnnxRuntimeBackend).logits(TEXTS)
    assert np.allclose(torch_logits, ort_logits, atol=1e-4)


def test_sub_batches_sort_by_length_but_keep_order(model_dir):
    whole = classifier_for(model_dir, TorchCpuBackend).logits(TEXTS)
    chunked = classifier_for(model_dir, TorchCpuBackend, sub_batch=2)
    assert np.allclose(chunked.logits(TEXTS), whole, atol=1e-5)
    assert chunked.run(TEXTS)[1].chunks == [2, 2, 1]


def test_torch_int8_stays_close(model_dir):
    fp32 = softmax(classifier_for(model_dir, TorchCpuBackend).logits(TEXTS))
    int8 = softmax(classifier_for(model_dir, TorchCpuBackend, int8=True).logits(TEXTS))
    assert np.abs(fp32 - int8).max() < 0.1


def test_onnxruntime_int8_runs_the_quantized_file(model_dir):
    classifier = classifier_for(model_dir, OnnxRuntimeBackend, int8=True)
    assert classifier.backend.describe()["model"] == layout.INT8_ONNX_FILE
    probabilities = softmax(classifier.logits(TEXTS))
    assert np.allclose(probabilities.sum(-1), 1.0, atol=1e-5)


def test_missing_int8_onnx_is_a_clear_refusal(model_dir):
    with pytest.raises(BackendUnavailable, match=layout.INT8_ONNX_FILE):
        OnnxRuntimeBackend(model_dir / "nowhere", ModelSpec.load(model_dir), OnnxRuntimeOptions(int8=True)).load()


def test_backend_orders():
    assert backend_order("auto") == ["tensorrt", "torch_cuda", "onnxruntime", "torch_cpu"]
    assert backend_order("torch_cuda") == ["torch_cuda", "onnxruntime", "torch_cpu"]
    assert backend_order("onnxruntime") == ["onnxruntime", "torch_cpu"]
    with pytest.raises(ValueError, match="choose one of"):
        backend_order("tpu")
    assert backend_order("torch_cpu") == ["torch_cpu"]


def test_a_backend_that_crashes_while_loading_falls_back(model_dir, monkeypatch):
    def broken(self):
        raise RuntimeError("corrupt model file")

    monkeypatch.setattr(OnnxRuntimeBackend, "_load_impl", broken)
    settings = HandlerSettings(backend="onnxruntime", torch_cpu=TorchCpuOptions(num_threads=1))
    backend, skipped = choose_backend(settings, model_dir, ModelSpec.load(model_dir), gpu_id=None)
    assert backend.name == "torch_cpu"
    assert skipped == ["backend onnxruntime failed to load: RuntimeError: corrupt model file"]


def test_load_answers_a_warm_up_batch_before_the_backend_is_ready(model_dir, monkeypatch):
    calls = []
    original = OnnxRuntimeBackend._infer_impl
    monkeypatch.setattr(OnnxRuntimeBackend, "_infer_impl", lambda self, inputs: calls.append(tuple(inputs["input_ids"].shape)) or original(self, inputs))
    backend = OnnxRuntimeBackend(model_dir, ModelSpec.load(model_dir), OnnxRuntimeOptions(int8=False, num_threads=1)).load()
    assert backend.loaded and len(calls) == 1


def test_a_failed_warm_up_closes_the_backend_and_the_next_one_loads(model_dir, monkeypatch):
    monkeypatch.setattr(OnnxRuntimeBackend, "_warm_up_impl", lambda self: (_ for _ in ()).throw(RuntimeError("warm-up crashed")))
    settings = HandlerSettings(backend="onnxruntime", torch_cpu=TorchCpuOptions(num_threads=1))
    backend, skipped = choose_backend(settings, model_dir, ModelSpec.load(model_dir), gpu_id=None)
    assert backend.name == "torch_cpu" and skipped == ["backend onnxruntime failed to load: RuntimeError: warm-up crashed"]


@pytest.mark.parametrize("backend_class, int8", [(OnnxRuntimeBackend, True), (OnnxRuntimeBackend, False), (TorchCpuBackend, False)])
def test_a_text_gets_the_same_probabilities_in_any_batch(model_dir, backend_class, int8):
    """What every CPU backend that can be the default must promise (|Δp| <= 1e-4)."""
    classifier = classifier_for(model_dir, backend_class, int8=int8, sub_batch=4)
    alone = softmax(classifier.logits(TEXTS[1:2]))[0]
    for mates in (TEXTS, TEXTS[::-1], TEXTS[1:2] + ["a"] * 9, ["word " * 50] * 3 + TEXTS[1:2]):
        batched = softmax(classifier.logits(mates))[mates.index(TEXTS[1])]
        assert np.abs(batched - alone).max() <= 1e-4


def test_dynamic_int8_is_not_batch_invariant_which_is_why_it_is_not_shipped(model_dir, tmp_path):
    """The dynamic quantizer (activation scales per forward pass) moves a text's answer with its neighbours."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dynamic_dir = model_dir_like_mar(model_dir / layout.CHECKPOINT_DIR, model_dir, tmp_path)
    quantize_dynamic(str(model_dir / layout.ONNX_FILE), str(dynamic_dir / layout.INT8_ONNX_FILE), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
    classifier = classifier_for(dynamic_dir, OnnxRuntimeBackend, int8=True)
    alone = softmax(classifier.logits(TEXTS[1:2]))[0]
    batched = softmax(classifier.logits(["word " * 50] * 3 + TEXTS[1:2]))[3]
    assert np.abs(batched - alone).max() > 1e-4
