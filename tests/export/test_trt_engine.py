"""The engine builder's own logic (profiles, trtexec line, install hint); building needs real TensorRT."""

import sys
from pathlib import Path

import pytest

from export import trt_engine
from handler import layout
from handler.errors import EngineBuildError
from handler.spec import ModelSpec


def test_default_profile_follows_serving_settings():
    profile = trt_engine.default_profile(ModelSpec(id2label={0: "a", 1: "b"}, max_length=128), batch_size=32)
    assert profile.shapes() == ((1, 1), (32, 64), (64, 128))


def test_profile_rejects_inverted_ranges():
    with pytest.raises(ValueError, match="min_batch <= opt_batch"):
        trt_engine.ProfileRange(min_batch=8, opt_batch=4)


def test_trtexec_command_names_every_input(tmp_path):
    spec = ModelSpec(id2label={0: "a", 1: "b"})
    line = trt_engine.trtexec_command(tmp_path / "m.onnx", tmp_path / "m.plan", spec, trt_engine.ProfileRange(), "fp16", None)
    assert "--minShapes=input_ids:1x1,attention_mask:1x1,token_type_ids:1x1" in line
    assert "--maxShapes=input_ids:64x128" in line and "--fp16" in line


def test_without_tensorrt_the_builder_says_what_to_install(monkeypatch, tiny_export, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineBuildError) as caught:
        trt_engine.main(["--onnx", str(tiny_export / "model.onnx"), "--engine", str(tmp_path / "m.plan")])
    assert "pip install tensorrt-cu12" in str(caught.value) and "pypi.nvidia.com" in str(caught.value)


def test_fp32_onnx_is_not_mistaken_for_fp16(tiny_export):
    assert trt_engine.onnx_is_fp16(tiny_export / "model.onnx") is False


def test_fp16_onnx_for_strongly_typed_tensorrt_passes_the_parity_check(tiny_checkpoint, tiny_export, tmp_path):
    """TensorRT 11 has no FP16 flag: the command writes model.fp16.onnx (fp16 weights, norms and softmax in fp32,
    fp32 I/O) and checks it against the fp32 checkpoint with ONNX Runtime before building from it."""
    import shutil

    import onnx

    export = Path(shutil.copytree(tiny_export, tmp_path / "export"))
    path = trt_engine.checked_fp16_onnx(export / layout.ONNX_FILE, tiny_checkpoint, None)
    assert path == export / layout.FP16_ONNX_FILE and trt_engine.onnx_is_fp16(path)
    graph = onnx.load(str(path)).graph
    assert any(node.op_type in trt_engine.FP16_KEPT_FP32_OPS for node in graph.node) and any(node.op_type == "Cast" for node in graph.node)
    assert all(value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for value in [*graph.input, *graph.output])


def test_fp8_engines_are_refused_on_gpus_without_fp8_tensor_cores():
    with pytest.raises(EngineBuildError, match="needs FP8 tensor cores.*A100 is sm 8.0.*--precision int8 or fp16"):
        trt_engine.check_fp8_gpu((8, 0), "A100")
    trt_engine.check_fp8_gpu((9, 0), "H100")  # no error
    trt_engine.check_fp8_gpu((8, 9), "L4")


def test_trtexec_line_of_a_quantized_engine_is_strongly_typed(tmp_path):
    spec = ModelSpec(id2label={0: "a", 1: "b"})
    line = trt_engine.trtexec_command(tmp_path / "model.qdq-int8.onnx", tmp_path / "m.plan", spec, trt_engine.ProfileRange(), "int8", None)
    assert "--onnx=" + str(tmp_path / "model.qdq-int8.onnx") in line and "--stronglyTyped" in line and "--fp16 --int8" in line
