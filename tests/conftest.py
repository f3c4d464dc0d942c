"""Shared fixtures: a tiny BERT classifier the tests build themselves, its ONNX export and .mar
(which also carries a stand-in engine file, so every TorchServe test runs the TensorRT fallback),
and real TorchServe instances on free loopback ports (always stopped, even when a test fails)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handler import layout
from harness.models import make_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT classifier with MiniLM's vocab and labels negative/neutral/positive."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint")


@pytest.fixture(scope="session")
def labelled_csv(tmp_path_factory) -> Path:
    """A small label,txt CSV (the tiny model's labels) for calibration and accuracy checks."""
    import csv

    path = tmp_path_factory.mktemp("data") / "texts.csv"
    rows = [("positive", "great value, would buy again"), ("negative", "broken on arrival, refund please"), ("neutral", "it arrived on monday"),
            ("positive", "the staff were lovely and the room was spotless"), ("negative", "worst delivery experience ever"),
            ("neutral", "the box is blue and weighs two kilos")] * 8  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("label", "txt"), *rows])
    return path


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint, labelled_csv, tmp_path_factory) -> Path:
    """ONNX export (model.onnx, calibrated static model.int8.onnx, serving_spec.json) of the tiny checkpoint.

    The tiny model has random weights, so its accuracy means nothing: the budget is wide open here
    (tests/export/test_quantize.py checks the budget itself)."""
    from export.onnx_export import onnx_from_checkpoint
    from export.quantize import static_int8_from_onnx

    out = tmp_path_factory.mktemp("tiny_export")
    onnx_path, _ = onnx_from_checkpoint(tiny_checkpoint, out, max_length=64)
    static_int8_from_onnx(onnx_path, tiny_checkpoint, labelled_csv, labelled_csv, calibration_texts=32, budget_points=100)
    return out


@pytest.fixture(scope="session")
def multi_label_model(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, export dir) of a seeded random multi-label BERT (MiniLM's tokenizer, max_length 64)."""
    from export.onnx_export import onnx_from_checkpoint
    from harness.models import random_family_checkpoint
    from training.data import default_backbone_dir

    checkpoint = random_family_checkpoint("bert", tmp_path_factory.mktemp("multi") / "checkpoint", default_backbone_dir(),
                                          problem_type="multi_label_classification")  # fmt: skip
    export_dir = tmp_path_factory.mktemp("multi_export")
    onnx_from_checkpoint(checkpoint, export_dir, max_length=64)
    return checkpoint, export_dir


def tiny_mar_args(checkpoint, export_dir, engine, store) -> list[str]:
    """build_mar.py arguments of the tests' archive: the shipped CPU defaults (static int8 ONNX included; the
    stand-in engine would otherwise pick the GPU's), a smaller batch and a long batch delay (so concurrent
    requests surely share batches)."""
    return ["--checkpoint", str(checkpoint), "--export-dir", str(export_dir), "--engine", str(engine), "--target", "cpu",
            "--out", str(store), "--batch-size", "16", "--max-batch-delay", "200"]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_model_store(tiny_checkpoint, tiny_export, tmp_path_factory) -> Path:
    """A model store holding bert_trt.mar built from the tiny checkpoint by build_mar.py."""
    import build_mar
    from export.mar import build_mar as build_archive
    from tests import recording_tensorrt

    work = tmp_path_factory.mktemp("ts")
    engine = work / layout.ENGINE_FILE  # a stand-in engine: on a machine without CUDA the handler must fall back
    engine.write_bytes(recording_tensorrt.engine_bytes())
    layout.sidecar_path(engine).write_text(json.dumps({"tensorrt_version": recording_tensorrt.VERSION, "compute_capability": "9.0"}))
    store = work / "model_store"
    build_archive(build_mar.parse_args(tiny_mar_args(tiny_checkpoint, tiny_export, engine, store)))
    return store


@pytest.fixture(scope="session")
def slow_model_store(tiny_checkpoint, tiny_export, tmp_path_factory) -> Path:
    """A model store with slow.mar: the tests' archive whose handler sleeps on "sleep N" requests
    (tests/integration/slow_handler.py), responseTimeout 5 s, batches of at most 4, one worker."""
    import build_mar
    from export.mar import build_mar as build_archive

    store = tmp_path_factory.mktemp("slow") / "model_store"
    handler = Path(__file__).parent / "integration" / "slow_handler.py"
    args = ["--checkpoint", str(tiny_checkpoint), "--export-dir", str(tiny_export), "--out", str(store), "--model-name", "slow",
            "--handler", str(handler), "--response-timeout", "5", "--batch-size", "4", "--max-batch-delay", "20",
            "--min-workers", "1", "--max-workers", "1"]  # fmt: skip (one worker: a sleeping batch holds the whole model)
    build_archive(build_mar.parse_args(args))
    return store


@pytest.fixture(scope="session")
def reference_classifier(tiny_checkpoint, tiny_export, tmp_path_factory):
    """The handler in-process with the archive's own model-config: what TorchServe must answer."""
    import build_mar
    from harness.inprocess import started_handler
    from harness.models import model_dir_like_mar

    request = build_mar.parse_args(tiny_mar_args(tiny_checkpoint, tiny_export, "unused.plan", "unused"))
    config = request.torchserve.model_config(request.handler)
    model_dir = model_dir_like_mar(tiny_checkpoint, tiny_export, tmp_path_factory.mktemp("ref"))
    handler, _ = started_handler(model_dir, model_yaml=config)
    return handler.classifier


@pytest.fixture(scope="session")
def cpu_reference(tiny_checkpoint, tiny_export, tmp_path_factory):
    """Eager fp32 PyTorch on the CPU, the numerical reference for the other backends."""
    from harness.models import in_process_classifier

    return in_process_classifier(tiny_checkpoint, tiny_export, tmp_path_factory.mktemp("cpu_ref"))


@pytest.fixture(scope="session")
def torchserve(tiny_model_store, tmp_path_factory):
    """TorchServe started with the shipped config.properties (model API off, token auth on)."""
    from harness.torchserve import TorchServe

    with TorchServe(workdir=tmp_path_factory.mktemp("ts_run"), model_store=tiny_model_store).running() as server:
        yield server


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "integration" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)
