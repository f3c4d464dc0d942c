"""Pack a fine-tuned checkpoint (and optionally its ONNX export and a TensorRT engine) into a .mar.

    python build_mar.py --checkpoint artifacts/default/checkpoint --export-dir artifacts/default/export

The archive holds the handler package, the checkpoint (weights, config with id2label,
tokenizer files), ``serving_spec.json``, optional ``model.onnx`` and ``model.plan`` (+ its
``model.plan.json`` sidecar) and a ``model-config.yaml`` with TorchServe's batching and
worker settings plus the ``handler:`` section. Everything the worker needs is inside: it
never touches the network.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from handler.backends import CHECKPOINT_SUBDIR, INT8_ONNX_FILE  # noqa: E402
from handler.selection import BACKENDS  # noqa: E402
from handler.spec import SPEC_FILE_NAME, ModelSpec  # noqa: E402

HANDLER_ENTRY = "bert_trt_handler.py"
ENGINE_SIDECAR_SUFFIX = ".json"

# TorchServe settings picked by bench/config_sweep.py on the 2-core CPU machine (see README):
# the lowest p99 at concurrency 1 among configurations within 80% of the best throughput.
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_BATCH_DELAY_MS = 5
DEFAULT_WORKERS = 1
DEFAULT_RESPONSE_TIMEOUT_S = 120
DEFAULT_CPU_SUB_BATCH = 8  # bench/inprocess_cpu.py: +9% over one pass per batch on 2 cores


def model_config(args: argparse.Namespace) -> dict:
    """The model-config.yaml TorchServe reads from the archive."""
    handler = {"backend": args.backend, "onnx_int8": args.onnx_int8, "cpu_sub_batch": args.cpu_sub_batch}
    if args.max_length:
        handler["max_length"] = args.max_length
    if args.num_threads:
        handler["num_threads"] = args.num_threads
    return {
        "minWorkers": args.min_workers,
        "maxWorkers": max(args.min_workers, args.max_workers),
        "batchSize": args.batch_size,
        "maxBatchDelay": args.max_batch_delay,
        "responseTimeout": args.response_timeout,
        "handler": handler,
    }


def stage_archive_files(staging: Path, checkpoint: Path, spec: ModelSpec, export_dir: Path | None, engine: Path | None, onnx_int8: bool) -> list[str]:
    """Copy everything the archive carries into `staging`; returns the names of the optional parts."""
    package = staging / "handler"
    package.mkdir()
    for source in sorted((REPO / "handler").glob("*.py")):
        shutil.copy2(source, package / source.name)

    model_dir = staging / CHECKPOINT_SUBDIR
    model_dir.mkdir()
    for source in sorted(checkpoint.iterdir()):
        if source.is_file() and source.name != "training_report.json":
            shutil.copy2(source, model_dir / source.name)
    spec.save(staging)

    extras = []
    onnx_name = INT8_ONNX_FILE if onnx_int8 else spec.onnx_file  # only the file the worker runs
    if export_dir and (export_dir / onnx_name).is_file():
        shutil.copy2(export_dir / onnx_name, staging / onnx_name)
        extras.append(onnx_name)
    if engine:
        sidecar = engine.with_name(engine.name + ENGINE_SIDECAR_SUFFIX)
        if not sidecar.is_file():
            raise SystemExit(f"{sidecar} is missing: build the engine with `python -m export.trt_engine`, which writes it")
        shutil.copy2(engine, staging / spec.engine_file)
        shutil.copy2(sidecar, staging / (spec.engine_file + ENGINE_SIDECAR_SUFFIX))
        extras.append(spec.engine_file)
    return extras


def build_mar(args: argparse.Namespace) -> Path:
    """Build `<out>/<model_name>.mar` and return its path."""
    checkpoint = args.checkpoint.resolve()
    if not (checkpoint / "config.json").is_file():
        raise SystemExit(f"{checkpoint} is not a checkpoint folder (no config.json): train one with `python -m export.train`")
    export_dir = args.export_dir.resolve() if args.export_dir else None
    if export_dir and (export_dir / SPEC_FILE_NAME).is_file():
        spec = ModelSpec.load(export_dir)
        if args.max_length and args.max_length > spec.max_length:
            raise SystemExit(f"--max-length {args.max_length} exceeds the export's {spec.max_length}: re-export with --max-length {args.max_length}")
    else:
        spec = ModelSpec.from_checkpoint(checkpoint, args.max_length)
    if args.onnx_int8 and not (export_dir and (export_dir / INT8_ONNX_FILE).is_file()):
        if export_dir:
            print(f"note: no {INT8_ONNX_FILE} in {export_dir}; packing the fp32 model.onnx (make one with export.onnx_export --int8)")
        args.onnx_int8 = False
    engine = args.engine.resolve() if args.engine else None
    if engine and not engine.is_file():
        raise SystemExit(f"engine {engine} does not exist: build it with `python -m export.trt_engine`")
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="bert_trt_mar_") as tmp:
        staging = Path(tmp) / "files"
        staging.mkdir()
        extras = stage_archive_files(staging, checkpoint, spec, export_dir, engine, args.onnx_int8)
        config_path = Path(tmp) / "model-config.yaml"
        config_path.write_text(yaml.safe_dump(model_config(args), sort_keys=False))
        archiver = Path(sys.executable).with_name("torch-model-archiver")
        command = [
            str(archiver if archiver.exists() else "torch-model-archiver"),
            "--model-name", args.model_name,
            "--version", args.version,
            "--handler", str(args.handler),
            "--extra-files", str(staging),
            "--config-file", str(config_path),
            "--export-path", str(args.out),
            "--force",
        ]  # fmt: skip
        subprocess.run(command, check=True)
    mar = args.out / f"{args.model_name}.mar"
    size = mar.stat().st_size / 2**20
    print(f"wrote {mar} ({size:.1f} MiB; labels {spec.labels}; max_length {spec.max_length}; extras: {', '.join(extras) or 'none'})")
    return mar


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/default/checkpoint"), help="fine-tuned HF checkpoint folder")
    parser.add_argument("--export-dir", type=Path, help="folder with model.onnx + serving_spec.json from export.onnx_export")
    parser.add_argument("--engine", type=Path, help="TensorRT engine (its .json sidecar must sit beside it)")
    parser.add_argument("--model-name", default="bert_trt")
    parser.add_argument("--handler", type=Path, default=REPO / "handler" / HANDLER_ENTRY, help="handler entry file (benchmarks pass a baseline)")
    parser.add_argument("--version", default="1.0")
    parser.add_argument("--out", type=Path, default=Path("model_store"))
    parser.add_argument("--backend", default="auto", choices=["auto", *BACKENDS])
    parser.add_argument("--max-length", type=int, help="truncate texts to this many tokens (default: the spec's, 128)")
    parser.add_argument("--num-threads", type=int, help="CPU threads per worker (default: cores / minWorkers)")
    parser.add_argument("--onnx-int8", action=argparse.BooleanOptionalAction, default=True, help="onnxruntime runs model.int8.onnx when the archive has it")
    parser.add_argument("--cpu-sub-batch", type=int, default=DEFAULT_CPU_SUB_BATCH, help="CPU backends: texts per forward pass, length-sorted")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="TorchServe batchSize")
    parser.add_argument("--max-batch-delay", type=int, default=DEFAULT_MAX_BATCH_DELAY_MS, help="TorchServe maxBatchDelay (ms)")
    parser.add_argument("--min-workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--max-workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--response-timeout", type=int, default=DEFAULT_RESPONSE_TIMEOUT_S, help="seconds")
    return parser.parse_args(argv)


if __name__ == "__main__":
    build_mar(parse_args())
