"""Our TensorRT backend logic, run against a recording stand-in for `tensorrt` (not real TensorRT).

What these prove: I/O dtypes follow the engine (int32 or int64), shapes are set within the
profile, buffers are bound by name, oversize batches are split, long texts are truncated to the
profile's max, short ones padded to its min, and every reason to refuse the engine is reported.
What they cannot prove: that a real engine runs; see docs/gpu-and-tensorrt.md ("What has run on real TensorRT").
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from handler import layout
from handler.backends.selection import choose_backend
from handler.errors import BackendUnavailable
from handler.backends.tensorrt import TensorRTBackend, engine_mismatch
from handler.classifier import TextClassifier
from handler.settings import HandlerSettings, OnnxRuntimeOptions
from handler.spec import ModelSpec
from handler.tokenizer import load_tokenizer
from harness.models import model_dir_like_mar
from tests import recording_tensorrt


class CpuRecordingTensorRTBackend(TensorRTBackend):
    """The real backend with its four CUDA hooks pointed at the CPU, so the stand-in can read buffers."""

    def _cuda_available(self):
        return True

    def _select_device(self, gpu_id):
        return torch.device("cpu")

    def _compute_capability(self, gpu_id):
        return (9, 0)

    def _stream_handle(self):
        return 1234


def write_engine(model_dir, description: bytes, **sidecar_overrides):
    (model_dir / layout.ENGINE_FILE).write_bytes(description)
    sidecar = {"tensorrt_version": recording_tensorrt.VERSION, "compute_capability": "9.0", "gpu_name": "stand-in", **sidecar_overrides}
    (model_dir / layout.ENGINE_SIDECAR_FILE).write_text(json.dumps(sidecar))


@pytest.fixture
def stand_in(monkeypatch):
    module = recording_tensorrt.make_module()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


@pytest.fixture
def model_dir(tiny_checkpoint, tiny_export, tmp_path):
    return model_dir_like_mar(tiny_checkpoint, tiny_export, tmp_path)


def expected_logits(inputs):
    mask = inputs["attention_mask"]
    return np.stack([(inputs["input_ids"] * mask).sum(1), mask.sum(1), inputs["token_type_ids"].sum(1)], 1).astype(np.float32)


@pytest.mark.parametrize("dtype, torch_dtype", [("INT32", torch.int32), ("INT64", torch.int64)])
def test_inputs_follow_engine_dtype_and_bind_by_name(stand_in, model_dir, dtype, torch_dtype):
    write_engine(model_dir, recording_tensorrt.engine_bytes(input_dtype=dtype))
    backend = CpuRecordingTensorRTBackend(model_dir, ModelSpec.load(model_dir), gpu_id=0).load()
    assert backend.input_dtypes == {name: torch_dtype for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert (backend.max_batch_size, backend.max_sequence_length) == (16, 64)
    ids = np.array([[101, 7, 8, 102], [101, 9, 102, 0]])
    inputs = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
    assert np.array_equal(backend.infer(inputs), expected_logits(inputs))
    calls = backend.context.calls
    assert ("set_input_shape", "input_ids", (2, 4)) in calls
    assert {c[1] for c in calls if c[0] == "set_tensor_address"} == {"input_ids", "attention_mask", "token_type_ids", "logits"}
    assert calls[-1] == ("execute_async_v3", 1234)


def test_short_inputs_are_padded_up_to_the_profile_minimum(stand_in, model_dir):
    write_engine(model_dir, recording_tensorrt.engine_bytes(profile=((2, 8), (8, 32), (16, 64))))
    backend = CpuRecordingTensorRTBackend(model_dir, ModelSpec.load(model_dir), gpu_id=0).load()
    ids = np.array([[101, 5, 102]])
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    logits = backend.infer(inputs)
    assert ("set_input_shape", "input_ids", (2, 8)) in backend.context.calls
    assert np.array_equal(logits, expected_logits(inputs))  # padding (mask 0) changes nothing, extra row dropped


def test_oversize_batches_are_split_and_long_texts_truncated(stand_in, model_dir):
    write_engine(model_dir, recording_tensorrt.engine_bytes(profile=((1, 1), (4, 16), (4, 16))))
    spec = ModelSpec.load(model_dir)
    backend = CpuRecordingTensorRTBackend(model_dir, spec, gpu_id=0).load()
    classifier = TextClassifier(load_tokenizer(model_dir), backend, spec)
    assert classifier.max_length == 16
    texts = [f"text {i} " + "word " * (i * 3) for i in range(10)]
    predictions, timings = classifier.run(texts)
    logits = np.array([prediction.logits for prediction in predictions])
    assert timings.chunks == [4, 4, 2]
    shapes = [c[2] for c in backend.context.calls if c[0] == "set_input_shape" and c[1] == "input_ids"]
    assert max(s[1] for s in shapes) <= 16 and max(s[0] for s in shapes) <= 4
    encoded = classifier.encode(texts)
    ids = np.zeros((len(texts), 16), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, text_ids in enumerate(encoded.input_ids):
        ids[row, : len(text_ids)], mask[row, : len(text_ids)] = text_ids, 1
    assert np.array_equal(logits, expected_logits({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}))  # order kept


def test_engine_mismatch_reasons():
    sidecar = {"tensorrt_version": "10.3.0", "compute_capability": "8.0", "gpu_name": "A100"}
    assert "built with TensorRT 10.3.0" in engine_mismatch(sidecar, "10.4.0", (8, 0))
    assert "compute capability 8.0 (A100)" in engine_mismatch(sidecar, "10.3.0", (9, 0))
    assert engine_mismatch(sidecar, "10.3.0", (8, 0)) is None


@pytest.mark.parametrize(
    "setup, reason",
    [
        ("no_engine", "no TensorRT engine in the .mar"),
        ("no_tensorrt", "tensorrt is not importable"),
        ("wrong_version", "built with TensorRT 10.0.0"),
        ("no_sidecar", f"{layout.ENGINE_SIDECAR_FILE} is missing"),
    ],
)
def test_each_refusal_names_its_reason(monkeypatch, stand_in, model_dir, setup, reason):
    if setup != "no_engine":
        write_engine(model_dir, recording_tensorrt.engine_bytes(), **({"tensorrt_version": "10.0.0"} if setup == "wrong_version" else {}))
    if setup == "no_sidecar":
        (model_dir / layout.ENGINE_SIDECAR_FILE).unlink()
    if setup == "no_tensorrt":
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(BackendUnavailable, match=reason):
        CpuRecordingTensorRTBackend(model_dir, ModelSpec.load(model_dir), gpu_id=0).load()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_auto_falls_back_to_the_cpu_with_logged_reasons(model_dir, caplog):
    write_engine(model_dir, recording_tensorrt.engine_bytes())
    settings = HandlerSettings(onnxruntime=OnnxRuntimeOptions(num_threads=1, int8=False))
    backend, skipped = choose_backend(settings, model_dir, ModelSpec.load(model_dir), gpu_id=0)
    assert backend.name == "onnxruntime"
    assert skipped == [
        "backend tensorrt skipped: no CUDA device visible to this worker",
        "backend torch_cuda skipped: no CUDA device visible to this worker",
    ]
    assert "backend tensorrt skipped" in caplog.text


def test_threads_never_share_the_execution_context_mid_call(stand_in, model_dir):
    """The registry says tensorrt cannot run two calls at once (one execution context holds the bound shapes
    and addresses): `infer` from 8 threads must run each call's set_input_shape .. execute_async_v3 as one
    uninterrupted block, and every thread must get its own batch's logits."""
    write_engine(model_dir, recording_tensorrt.engine_bytes())
    backend = CpuRecordingTensorRTBackend(model_dir, ModelSpec.load(model_dir), gpu_id=0).load()
    assert backend.entry.concurrent_infer is False
    context = backend.context
    context.execute_delay_s = 0.001  # a call holds the context long enough for any other thread to barge in
    start = len(context.calls)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(64):
        ids = rng.integers(1, 1000, size=(int(rng.integers(1, 9)), int(rng.integers(2, 33))))
        batches.append({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": rng.integers(0, 2, size=ids.shape)})
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(backend.infer, batches))
    assert all(np.array_equal(result, expected_logits(batch)) for result, batch in zip(results, batches))
    calls, threads = context.calls[start:], context.threads[start:]
    assert len({*threads}) > 1, "the calls did not come from several threads"
    blocks = [index for index, call in enumerate(calls) if call[:2] == ("set_input_shape", "input_ids")] + [len(calls)]
    assert len(blocks) - 1 == len(batches)
    for first, end in zip(blocks, blocks[1:]):
        assert len({*threads[first:end]}) == 1, f"calls {first}..{end} interleave threads: {calls[first:end]}"
        assert calls[end - 1][0] == "execute_async_v3"
