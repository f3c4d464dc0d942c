"""Lay out a .mar for KServe's TorchServe runtime: <out>/model-store/<name>.mar and <out>/config/config.properties.

    python -m export.kserve_storage --mar model_store/bert_trt.mar --out dist/kserve-torchserve

Upload <out> to the storageUri of deploy/kserve/torchserve-runtime.yaml (a PVC, S3 or GCS prefix). The
config is deploy/kserve/torchserve-config.properties plus a model_snapshot that registers the archive
at start with its workers and timeouts from its model-config.yaml, and batchSize 1: TorchServe 0.12's
"kserve" envelope unwraps only the first request of a batch (the others would get no answer), so
batching happens inside each request's "instances" list instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import zipfile
from pathlib import Path

import yaml

from handler import layout
from handler.errors import ArchiveError, run_cli

REPO = Path(__file__).resolve().parent.parent
CONFIG_TEMPLATE = REPO / "deploy" / "kserve" / "torchserve-config.properties"


def model_snapshot(model_name: str, mar_name: str, model_yaml: dict) -> dict:
    """TorchServe's model_snapshot registering one archive at start (batchSize 1, see the module docstring)."""
    version = {
        "defaultVersion": True,
        "marName": mar_name,
        "minWorkers": int(model_yaml.get("minWorkers", 1)),
        "maxWorkers": int(model_yaml.get("maxWorkers", 1)),
        "batchSize": 1,
        "maxBatchDelay": int(model_yaml.get("maxBatchDelay", 1)),
        "responseTimeout": int(model_yaml.get("responseTimeout", 120)),
    }
    return {"name": "startup.cfg", "modelCount": 1, "models": {model_name: {"1.0": version}}}


def stage(mar: Path, out: Path, model_name: str = "bert_trt") -> Path:
    """Write the storage layout KServe's TorchServe runtime reads; returns the config file's path."""
    if not mar.is_file():
        raise ArchiveError(f"no archive at {mar}: build it with `make mar`")
    with zipfile.ZipFile(mar) as archive:
        model_yaml = yaml.safe_load(archive.read(layout.MODEL_CONFIG_FILE)) if layout.MODEL_CONFIG_FILE in archive.namelist() else {}
    (out / "model-store").mkdir(parents=True, exist_ok=True)
    (out / "config").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mar, out / "model-store" / f"{model_name}.mar")
    config = out / "config" / "config.properties"
    snapshot = json.dumps(model_snapshot(model_name, f"{model_name}.mar", model_yaml or {}), separators=(",", ":"))
    config.write_text(CONFIG_TEMPLATE.read_text() + f"model_snapshot={snapshot}\n")
    return config


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mar", type=Path, default=Path("model_store/bert_trt.mar"))
    parser.add_argument("--out", type=Path, default=Path("dist/kserve-torchserve"))
    parser.add_argument("--model-name", default="bert_trt")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = stage(args.mar, args.out, args.model_name)
    print(f"wrote {args.out}/model-store/{args.model_name}.mar and {config}: upload {args.out} to the InferenceService's storageUri")


if __name__ == "__main__":
    run_cli(main)
