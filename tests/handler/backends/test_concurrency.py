"""The concurrency contract (handler/backends/registry.py), held from several threads at once.

For each CPU backend: N threads x many batches through one classifier give the answers the same batches
get one after the other (|dp| <= 1e-4, the CPU promise). The GPU backends' side is in test_torch_cuda.py
(run on the device) and the TensorRT stand-in's in test_tensorrt_with_recording_stand_in.py."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from handler.backends.onnxruntime import OnnxRuntimeBackend
from handler.backends.registry import BACKENDS
from handler.backends.torch_cpu import TorchCpuBackend
from handler.classifier import TextClassifier
from handler.spec import ModelSpec
from handler.tokenizer import load_tokenizer
from harness.models import model_dir_like_mar

WORDS = "the room was clean and quiet but the breakfast was cold and the staff never answered my calls".split()
THREADS = 8
BATCHES = 96


@pytest.fixture(scope="module")
def model_dir(tiny_checkpoint, tiny_export, tmp_path_factory):
    return model_dir_like_mar(tiny_checkpoint, tiny_export, tmp_path_factory.mktemp("concurrency"))


def random_batches(seed: int = 7) -> list[list[str]]:
    """Batches of 1..24 texts of 1..60 words: every batch pads differently."""
    rng = random.Random(seed)
    return [[" ".join(rng.choices(WORDS, k=rng.randint(1, 60))) for _ in range(rng.randint(1, 24))] for _ in range(BATCHES)]


def probabilities(classifier: TextClassifier, texts: list[str]) -> np.ndarray:
    return np.array([prediction.probabilities for prediction in classifier.predict(texts)])


@pytest.mark.parametrize(
    "backend_class, options",
    [(OnnxRuntimeBackend, {"int8": True}), (OnnxRuntimeBackend, {"int8": False}), (TorchCpuBackend, {"int8": False}), (TorchCpuBackend, {"int8": True})],
    ids=["onnxruntime-int8", "onnxruntime-fp32", "torch_cpu", "torch_cpu-int8"],
)
def test_threads_through_one_classifier_get_the_sequential_answers(model_dir, backend_class, options):
    spec = ModelSpec.load(model_dir)
    backend = backend_class(model_dir, spec, backend_class.options_class()(num_threads=2, **options)).load()
    assert backend.entry.concurrent_infer is True  # what the registry promises for this backend
    classifier = TextClassifier(load_tokenizer(model_dir), backend, spec)
    batches = random_batches()
    sequential = [probabilities(classifier, batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        concurrent = list(pool.map(lambda batch: probabilities(classifier, batch), batches))
    worst = max(float(np.abs(a - b).max()) for a, b in zip(sequential, concurrent))
    assert worst <= 1e-4, f"max |dp| {worst:.2e} between concurrent and sequential runs of the same batches"


def test_the_registry_is_the_one_list_of_backends():
    """Each entry's module defines its class under the entry's name and options; settings has one options
    field per entry, of that type; selection tries them in the registry's order."""
    from dataclasses import fields

    from handler.backends.selection import backend_order
    from handler.settings import HandlerSettings

    for entry in BACKENDS:
        cls = entry.load_class()  # the GPU modules import on a CPU machine too (torch CPU build)
        assert (cls.name, cls.__name__, cls.options_class()) == (entry.name, entry.class_name, entry.options_type)
    option_fields = {f.name: f.type for f in fields(HandlerSettings) if f.name in {entry.name for entry in BACKENDS}}
    assert list(option_fields) == [entry.name for entry in BACKENDS]
    assert all(isinstance(HandlerSettings().options_for(entry.name), entry.options_type) for entry in BACKENDS)
    assert backend_order("auto") == [entry.name for entry in BACKENDS]
