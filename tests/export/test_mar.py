"""The built archive: the whole handler tree inside, importable on its own, and a complete handler: section."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import yaml

from handler import layout
from handler.settings import HandlerSettings

REPO_PACKAGES = {"export", "training", "harness", "bench", "tests", "build_mar", "scripts"}


def test_archive_carries_the_whole_handler_tree(tiny_model_store):
    names = set(zipfile.ZipFile(tiny_model_store / "bert_trt.mar").namelist())
    sources = {str(path.relative_to(Path(layout.__file__).parent.parent)) for path in Path(layout.__file__).parent.rglob("*.py")}
    assert sources <= names, f"missing from the .mar: {sorted(sources - names)}"
    assert {layout.HANDLER_ENTRY, layout.SPEC_FILE, layout.INT8_ONNX_FILE, layout.ENGINE_FILE, layout.ENGINE_SIDECAR_FILE} <= names
    assert not any("__pycache__" in name for name in names)


def test_model_config_holds_the_complete_handler_section(tiny_model_store):
    archive = zipfile.ZipFile(tiny_model_store / "bert_trt.mar")
    config = yaml.safe_load(archive.read(layout.MODEL_CONFIG_FILE))
    assert set(config["handler"]) == set(HandlerSettings().to_model_yaml())
    settings = HandlerSettings.from_model_yaml(config)
    assert settings.onnxruntime.int8 is True  # the shipped default: the calibrated int8 ONNX
    assert (config["batchSize"], config["maxBatchDelay"]) == (16, 200)


def test_handler_imports_from_the_extracted_archive_alone(tiny_model_store, tmp_path):
    """No module of the handler may reach outside handler/: imported with the repository off sys.path."""
    zipfile.ZipFile(tiny_model_store / "bert_trt.mar").extractall(tmp_path)
    for path in (tmp_path / layout.HANDLER_PACKAGE).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            outside = [name for name in names if name.split(".")[0] in REPO_PACKAGES]
            assert not outside, f"{path.relative_to(tmp_path)}:{node.lineno} imports {outside} from outside handler/"
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in type(finder).__module__]
        sys.path[:] = [{str(tmp_path)!r}] + [p for p in sys.path if "site-packages" in p or "lib/python" in p]
        import bert_trt_handler, handler
        for module in pkgutil.walk_packages(handler.__path__, "handler."):
            importlib.import_module(module.name)
        leaked = sorted(name for name in sys.modules if name.split(".")[0] in {sorted(REPO_PACKAGES)!r})
        assert not leaked, leaked
        outside = sorted(m.__name__ for m in list(sys.modules.values()) if m.__name__.split(".")[0] == "handler" and not (getattr(m, "__file__", "") or "").startswith({str(tmp_path)!r}))
        assert not outside, outside
        print("ok", len([n for n in sys.modules if n.startswith("handler")]))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


def test_build_mar_picks_gpu_defaults_with_an_engine_or_when_told_and_keeps_what_is_given():
    from build_mar import parse_args
    from export.mar import GPU_TARGET_SETTINGS, TorchServeSettings

    assert parse_args([]).torchserve == TorchServeSettings()
    assert parse_args(["--engine", "model.plan"]).torchserve == GPU_TARGET_SETTINGS
    chosen = parse_args(["--target", "gpu", "--min-workers", "8", "--max-workers", "8"]).torchserve
    assert (chosen.min_workers, chosen.max_workers, chosen.batch_size, chosen.max_batch_delay_ms) == (8, 8, 64, 1)
    assert parse_args(["--engine", "model.plan", "--target", "cpu"]).torchserve == TorchServeSettings()
