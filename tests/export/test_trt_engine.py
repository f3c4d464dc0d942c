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


def test_every_default_profile_is_tuned_for_the_gpu_archives_batch_size():
    """The engine serves in the GPU archive (build_mar.py --target gpu): its batchSize is the profile's opt batch,
    whichever way the profile is made (the command's default, `default_profile`, `ProfileRange()`)."""
    from export.mar import TorchServeSettings

    gpu_batch = TorchServeSettings.for_target("gpu").batch_size
    spec = ModelSpec(id2label={0: "a", 1: "b"}, max_length=128)
    assert trt_engine.SERVED_BATCH_SIZE == gpu_batch == 64
    assert trt_engine.build_parser().parse_args([]).batch_size == gpu_batch
    for profile in (trt_engine.default_profile(spec), trt_engine.ProfileRange()):
        assert (profile.opt_batch, profile.max_batch) == (gpu_batch, 2 * gpu_batch)


def test_the_command_builds_the_default_profile_for_the_gpu_archive(monkeypatch, tiny_export, tmp_path):
    built = {}
    monkeypatch.setattr(trt_engine, "builder_has_fp16_flag", lambda: True)  # TensorRT 10: no fp16 ONNX, no parity check
    monkeypatch.setattr(trt_engine, "engine_from_onnx", lambda onnx, engine, profile, *rest: built.update(profile=profile) or fake_sidecar())
    trt_engine.main(["--onnx", str(tiny_export / "model.onnx"), "--engine", str(tmp_path / "m.plan")])
    assert (built["profile"].opt_batch, built["profile"].max_batch) == (64, 128)
    assert built["profile"].max_seq == ModelSpec.load(tiny_export).max_length


def fake_sidecar() -> dict:
    return {"tensorrt_version": "10.13.3.9", "gpu_name": "none", "compute_capability": "9.0"}


def strongly_typed_tensorrt(monkeypatch) -> list:
    """TensorRT 11 (no FP16 flag) with the build recorded instead of run; returns the list the build is recorded in."""
    calls = []
    monkeypatch.setattr(trt_engine, "builder_has_fp16_flag", lambda: False)
    monkeypatch.setattr(trt_engine, "engine_from_onnx", lambda onnx, *rest: calls.append(onnx) or fake_sidecar())
    return calls


def test_a_users_onnx_needs_its_own_checkpoint_and_texts_for_the_fp16_parity_check(monkeypatch, tiny_export, tmp_path):
    """Without --checkpoint / --parity-texts the check would compare the user's model with the built-in MiniLM:
    refused before anything is written, naming both options."""
    import shutil

    calls = strongly_typed_tensorrt(monkeypatch)
    export = Path(shutil.copytree(tiny_export, tmp_path / "export"))
    with pytest.raises(EngineBuildError, match="pass --checkpoint and --parity-texts.*built-in model"):
        trt_engine.main(["--onnx", str(export / layout.ONNX_FILE), "--engine", str(tmp_path / "m.plan")])
    with pytest.raises(EngineBuildError, match="pass --parity-texts"):
        trt_engine.main(["--onnx", str(export / layout.ONNX_FILE), "--engine", str(tmp_path / "m.plan"), "--checkpoint", "ck"])
    assert not calls and not (export / layout.FP16_ONNX_FILE).exists()


def test_a_users_onnx_with_its_checkpoint_and_texts_is_checked_and_built(monkeypatch, tiny_checkpoint, tiny_export, labelled_csv, tmp_path):
    import shutil

    calls = strongly_typed_tensorrt(monkeypatch)
    export = Path(shutil.copytree(tiny_export, tmp_path / "export"))
    trt_engine.main(["--onnx", str(export / layout.ONNX_FILE), "--engine", str(tmp_path / "m.plan"),
                     "--checkpoint", str(tiny_checkpoint), "--parity-texts", str(labelled_csv)])  # fmt: skip
    assert calls == [export / layout.FP16_ONNX_FILE]  # built from the checked fp16 ONNX


def test_the_built_in_onnx_keeps_its_own_checkpoint_and_texts_by_default():
    args = trt_engine.build_parser().parse_args([])
    assert trt_engine.reference_files(args, ("--checkpoint", "--parity-texts")) == (trt_engine.DEFAULT_CHECKPOINT, trt_engine.DEFAULT_PARITY_TEXTS)


def test_int8_from_a_users_onnx_needs_its_checkpoint(monkeypatch, tiny_export, tmp_path):
    calls = strongly_typed_tensorrt(monkeypatch)
    with pytest.raises(EngineBuildError, match="pass --checkpoint"):
        trt_engine.main(["--onnx", str(tiny_export / layout.ONNX_FILE), "--engine", str(tmp_path / "m.plan"), "--precision", "int8"])
    assert not calls


def test_every_tensorrt_install_suggestion_in_the_code_is_pinned_to_the_version_the_api_is_written_for():
    """`pip install tensorrt-cu12` alone gets TensorRT 11 today, not the 10 this module's API path is written against."""
    import re

    repo = Path(__file__).resolve().parents[2]
    suggestions = []
    for path in repo.rglob("*.py"):
        if {".venv", "site-packages", "tests"} & set(path.relative_to(repo).parts):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            suggestions += [(f"{path.relative_to(repo)}:{number}", match) for match in re.findall(r"tensorrt-cu1\d[^\s\"'`)]*", line)]
    assert suggestions, "no install suggestion found: the hint moved?"
    unpinned = [(where, text) for where, text in suggestions if not text.endswith(f"=={trt_engine.TENSORRT_VERSION}") and "{" not in text]
    assert not unpinned, unpinned
    assert f"tensorrt-cu12=={trt_engine.TENSORRT_VERSION}" in trt_engine.INSTALL_HINT and trt_engine.TENSORRT_VERSION.startswith("10.")


def test_profile_rejects_inverted_ranges():
    with pytest.raises(ValueError, match="min_batch <= opt_batch"):
        trt_engine.ProfileRange(min_batch=8, opt_batch=4)


def test_trtexec_command_names_every_input(tmp_path):
    spec = ModelSpec(id2label={0: "a", 1: "b"})
    line = trt_engine.trtexec_command(tmp_path / "m.onnx", tmp_path / "m.plan", spec, trt_engine.ProfileRange(), "fp16", None)
    assert "--minShapes=input_ids:1x1,attention_mask:1x1,token_type_ids:1x1" in line
    assert f"--maxShapes=input_ids:{2 * trt_engine.SERVED_BATCH_SIZE}x128" in line and "--fp16" in line


def test_without_tensorrt_the_builder_says_what_to_install(monkeypatch, tiny_export, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineBuildError) as caught:
        trt_engine.main(["--onnx", str(tiny_export / "model.onnx"), "--engine", str(tmp_path / "m.plan")])
    assert f"pip install tensorrt-cu12=={trt_engine.TENSORRT_VERSION}" in str(caught.value) and "pypi.nvidia.com" in str(caught.value)


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
