"""Pack a fine-tuned checkpoint (and optionally its ONNX export and a TensorRT engine) into a .mar.

The archive holds the whole handler package (subfolders included), the checkpoint (weights,
config with id2label, tokenizer files), ``serving_spec.json``, the ONNX file the worker runs,
optionally the engine with its sidecar (file names in handler/layout.py) and a
``model-config.yaml`` with TorchServe's batching and worker settings plus the complete
``handler:`` section. Everything the worker needs is inside: it never touches the network.
`build_mar.py` at the repository root is the command line over `build_mar` here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from handler import layout
from handler.errors import ArchiveError
from handler.settings import PAIR_MODEL_TRUNCATION_POLICIES, PAIR_TRUNCATION_POLICIES, HandlerSettings
from handler.spec import ModelSpec

REPO = Path(__file__).resolve().parent.parent
HANDLER_SOURCE = REPO / layout.HANDLER_PACKAGE


@dataclass(frozen=True)
class TorchServeSettings:
    """TorchServe's per-model settings written to model-config.yaml.

    Defaults measured on the 2-core CPU machine against the Triton peer (bench/peer_comparison.py, see
    README): two workers, each free to use every core when alone (ONNX Runtime threads do not spin, see
    HandlerSettings.for_workers), and a 1 ms batch window. TorchServe 0.12 takes whatever is queued and
    then waits up to maxBatchDelay for more; 1 ms is its shortest useful window (with 0 it sends at most
    two requests per batch), so a lone request is not held for long and a loaded worker still gets full batches.
    """

    batch_size: int = 32
    max_batch_delay_ms: int = 1
    min_workers: int = 2
    max_workers: int = 2
    #: a batch taking longer fails with 500 and its worker is killed and restarted
    response_timeout_s: int = 120
    #: loading a worker (imports, backend, warm-up) has its own budget, so a slow GPU start is not killed in a loop
    startup_timeout_s: int = 300
    #: TorchServe 0.12 stops restarting a failing worker for good after this many seconds of failures (default
    #: 300), and requests then wait in the queue forever; a week keeps it retrying (with back-off) through
    #: transient faults, while the readiness probe (ops.health) reports the model not ready
    max_retry_timeout_s: int = 7 * 24 * 3600

    @classmethod
    def for_target(cls, target: str) -> "TorchServeSettings":
        """The defaults of a serving target: "cpu" (above) or "gpu" (`GPU_TARGET_SETTINGS`)."""
        if target not in SERVING_TARGETS:
            raise ValueError(f"unknown serving target {target!r}; choose one of {SERVING_TARGETS}")
        return GPU_TARGET_SETTINGS if target == "gpu" else cls()

    def model_config(self, handler: HandlerSettings) -> dict:
        """The model-config.yaml TorchServe reads from the archive."""
        return {
            "minWorkers": self.min_workers,
            "maxWorkers": max(self.min_workers, self.max_workers),
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms,
            "responseTimeout": self.response_timeout_s,
            "startupTimeout": self.startup_timeout_s,
            "maxRetryTimeoutInSec": self.max_retry_timeout_s,
            "handler": handler.to_model_yaml(),
        }


SERVING_TARGETS = ("cpu", "gpu")
#: 4 workers sharing the GPU, batches of up to 64 gathered for at most 1 ms (TorchServe 0.12's shortest useful window).
#: Measured on one H200 (bench/gpu_host_path.py, docs/gpu-and-tensorrt.md): a lone request's p50 2.3 ms against 12.6 ms with the
#: previous 10 ms window; the window no longer pays for itself now that a worker answers a batch of 64 in ~2.5 ms
GPU_TARGET_SETTINGS = TorchServeSettings(batch_size=64, max_batch_delay_ms=1, min_workers=4, max_workers=4)


@dataclass(frozen=True)
class MarRequest:
    """Everything `build_mar` needs: inputs, archive name and place, and the settings it carries."""

    checkpoint: Path
    export_dir: Path | None = None
    engine: Path | None = None
    model_name: str = "bert_trt"
    version: str = "1.0"
    out: Path = Path("model_store")
    #: the handler entry file (benchmarks pass a baseline handler)
    handler_entry: Path = HANDLER_SOURCE / layout.HANDLER_ENTRY
    handler: HandlerSettings = field(default_factory=HandlerSettings)
    torchserve: TorchServeSettings = field(default_factory=TorchServeSettings)


def stage_archive_files(staging: Path, request: MarRequest, spec: ModelSpec) -> list[str]:
    """Copy everything the archive carries into `staging`; returns the names of the optional parts."""
    shutil.copytree(HANDLER_SOURCE, staging / layout.HANDLER_PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    model_dir = staging / layout.CHECKPOINT_DIR
    model_dir.mkdir()
    for source in sorted(request.checkpoint.iterdir()):
        if source.is_file() and source.name != layout.TRAINING_REPORT_FILE:
            shutil.copy2(source, model_dir / source.name)
    spec.save(staging)

    extras = []
    onnx_name = layout.INT8_ONNX_FILE if request.handler.onnxruntime.int8 else layout.ONNX_FILE  # only the file the worker runs
    if request.export_dir and (request.export_dir / onnx_name).is_file():
        shutil.copy2(request.export_dir / onnx_name, staging / onnx_name)
        extras.append(onnx_name)
    if request.engine:
        sidecar = layout.sidecar_path(request.engine)
        if not sidecar.is_file():
            raise ArchiveError(f"{sidecar} is missing: build the engine with `python -m export.trt_engine`, which writes it")
        shutil.copy2(request.engine, staging / layout.ENGINE_FILE)
        shutil.copy2(sidecar, staging / layout.ENGINE_SIDECAR_FILE)
        extras.append(layout.ENGINE_FILE)
    return extras


def resolved(request: MarRequest) -> tuple[MarRequest, ModelSpec]:
    """The request with absolute paths and int8 turned off when the export has no int8 file, and the spec
    to pack (the export's, else one made from the checkpoint); raises `ArchiveError` on missing inputs."""
    checkpoint = request.checkpoint.resolve()
    if not (checkpoint / "config.json").is_file():
        raise ArchiveError(f"{checkpoint} is not a checkpoint folder (no config.json): train one with `python -m training.train`")
    export_dir = request.export_dir.resolve() if request.export_dir else None
    max_length = request.handler.max_length
    if export_dir and (export_dir / layout.SPEC_FILE).is_file():
        spec = ModelSpec.load(export_dir)
        if max_length and max_length > spec.max_length:
            raise ArchiveError(f"--max-length {max_length} exceeds the export's {spec.max_length}: re-export with --max-length {max_length}")
    else:
        spec = ModelSpec.from_checkpoint(checkpoint, max_length)
    check_pair_settings(spec, request.handler)
    handler = request.handler
    if handler.onnxruntime.int8 and not (export_dir and (export_dir / layout.INT8_ONNX_FILE).is_file()):
        if export_dir:
            print(f"note: no {layout.INT8_ONNX_FILE} in {export_dir}; packing the fp32 {layout.ONNX_FILE} (make one with export.onnx_export --int8)")
        handler = replace(handler, onnxruntime=replace(handler.onnxruntime, int8=False))
    engine = request.engine.resolve() if request.engine else None
    if engine and not engine.is_file():
        raise ArchiveError(f"engine {engine} does not exist: build it with `python -m export.trt_engine`")
    return replace(request, checkpoint=checkpoint, export_dir=export_dir, engine=engine, handler=handler), spec


def check_pair_settings(spec: ModelSpec, handler: HandlerSettings) -> None:
    """Raise `ArchiveError` when the truncation settings do not fit the model's inputs: a pair model is cut only
    by pair_truncation (truncation must be one of PAIR_MODEL_TRUNCATION_POLICIES); a single-text model takes no
    pair_truncation other than the default."""
    if spec.text_pair and handler.truncation not in PAIR_MODEL_TRUNCATION_POLICIES:
        raise ArchiveError(
            f"--truncation {handler.truncation} is not served for a text-pair model: tail, head+tail and chunks have no agreed meaning "
            f"for two texts, so a pair is cut at the end of the text(s) --pair-truncation names ({', '.join(PAIR_TRUNCATION_POLICIES)}); "
            f"build with --truncation {' or '.join(PAIR_MODEL_TRUNCATION_POLICIES)} (the default)"
        )
    if not spec.text_pair and handler.pair_truncation != HandlerSettings().pair_truncation:
        raise ArchiveError(
            f"--pair-truncation {handler.pair_truncation} applies to text-pair models only, and this model reads single texts (its spec's "
            "text_pair is false): drop the option, or re-export with `python -m export.onnx_export --text-pair` if the model reads pairs"
        )


def archive_summary(spec: ModelSpec, handler: HandlerSettings) -> str:
    """What the archive serves, for its summary line: outputs, inputs and max_length."""
    outputs = f"regression score {spec.labels[0]!r}" if spec.regression else f"labels {spec.labels}"
    inputs = f"text pairs (pair_truncation {handler.pair_truncation})" if spec.text_pair else "single texts"
    made = ""
    if spec.compression:
        record = spec.compression
        made = (f"; student of {record.teacher_layers} -> {len(record.kept_layers)} layers, FFN {record.teacher_intermediate_size} -> "
                f"{record.intermediate_size} ({-record.loss_points:+.2f} accuracy points vs teacher)")  # fmt: skip
    return f"{outputs}; {inputs}; max_length {spec.max_length}{made}"


def build_mar(request: MarRequest) -> Path:
    """Build `<out>/<model_name>.mar` with torch-model-archiver and return its path."""
    request, spec = resolved(request)
    request.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bert_trt_mar_") as tmp:
        staging = Path(tmp) / "files"
        staging.mkdir()
        extras = stage_archive_files(staging, request, spec)
        config_path = Path(tmp) / layout.MODEL_CONFIG_FILE
        config_path.write_text(yaml.safe_dump(request.torchserve.model_config(request.handler), sort_keys=False))
        archiver = Path(sys.executable).with_name("torch-model-archiver")
        command = [
            str(archiver if archiver.exists() else "torch-model-archiver"),
            "--model-name", request.model_name,
            "--version", request.version,
            "--handler", str(request.handler_entry),
            "--extra-files", str(staging),
            "--config-file", str(config_path),
            "--export-path", str(request.out),
            "--force",
        ]  # fmt: skip
        # torch-model-archiver stages files in $TMPDIR/<model name>: a private TMPDIR keeps two builds of one name apart
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TMPDIR": tmp})
        if result.returncode != 0:
            raise ArchiveError(f"torch-model-archiver failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    mar = request.out / f"{request.model_name}.mar"
    size = mar.stat().st_size / 2**20
    print(f"wrote {mar} ({size:.1f} MiB; {archive_summary(spec, request.handler)}; extras: {', '.join(extras) or 'none'})")
    return mar
