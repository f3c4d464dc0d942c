"""Every file name inside a bert_trt archive, defined once.

TorchServe unpacks the .mar into the worker's model directory; the export folder
(`export.onnx_export --out-dir`) uses the same names, so `build_mar.py` copies files across
without renaming them.

    bert_trt_handler.py       the entry module TorchServe loads (a copy of handler/bert_trt_handler.py)
    handler/                  this package, subfolders included
    model/                    the fine-tuned checkpoint: config.json (id2label), weights, tokenizer files
    serving_spec.json         the shared spec (handler/spec.py)
    model.onnx                the fp32 ONNX export (onnxruntime backend)
    model.int8.onnx           int8 ONNX (onnxruntime backend with onnx_int8)
    fp8_scales.json           static FP8 scales for torch_cuda's cuda_dtype float8 (export.quantize --write torch-fp8)
    model.plan                TensorRT engine, with its sidecar model.plan.json
    model-config.yaml         TorchServe's model config with the handler: section
"""

from __future__ import annotations

from pathlib import Path

HANDLER_PACKAGE = "handler"
HANDLER_ENTRY = "bert_trt_handler.py"
CHECKPOINT_DIR = "model"
SPEC_FILE = "serving_spec.json"
ONNX_FILE = "model.onnx"
INT8_ONNX_FILE = "model.int8.onnx"
#: the mixed-precision copy export.trt_engine writes for strongly typed TensorRT (11) fp16 builds
FP16_ONNX_FILE = "model.fp16.onnx"
#: TensorRT's explicit-quantization graphs (symmetric QDQ) export.quantize writes for export.trt_engine --precision int8 / fp8
QDQ_ONNX_FILES = {"int8": "model.qdq-int8.onnx", "fp8": "model.qdq-fp8.onnx"}
#: per-tensor activation ranges of every projection, for the torch_cuda backend's FP8 path
FP8_SCALES_FILE = "fp8_scales.json"
ENGINE_FILE = "model.plan"
#: the engine's sidecar sits beside it with this suffix added (model.plan -> model.plan.json)
SIDECAR_SUFFIX = ".json"
MODEL_CONFIG_FILE = "model-config.yaml"
#: written by training next to the checkpoint; not packed into the archive
TRAINING_REPORT_FILE = "training_report.json"


def sidecar_path(engine: str | Path) -> Path:
    """Where the JSON sidecar of an engine file lives (same folder, name + SIDECAR_SUFFIX)."""
    engine = Path(engine)
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


#: the sidecar of the archive's engine
ENGINE_SIDECAR_FILE = sidecar_path(ENGINE_FILE).name
