"""Device check: does our ONNX export parse and build with TensorRT's ONNX parser and our profile?

    PYTHONPATH=.:<dir with tensorrt_rtx_libs + tensorrt_rtx_bindings> python -m bench.trt_rtx_build_check \\
        --tokenizer DIR --out results/

Uses TensorRT-RTX, the only TensorRT build installable here: its builder parses and builds on a
Hopper GPU, but it refuses to deserialize there (it supports compute capability 8.0/8.6/8.9/12.x).
So this runs `export.trt_engine.engine_from_onnx` for real (parser, profile, build, sidecar) with
the RTX module passed as `trt`, and then records what deserializing says. It is NOT a runtime
check of the TensorRT backend. The model has MiniLM-L6's shape with random weights.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from handler import layout


def graphs_for_precisions(onnx_path: Path, checkpoint: Path, texts: Path):
    """(precision, ONNX) pairs the project writes for strongly typed builders: fp16 conversion, int8 and fp8 QDQ."""
    from export.quantize import CalibrationData, tensorrt_qdq_onnx
    from export.trt_engine import fp16_onnx

    yield "fp16", fp16_onnx(onnx_path)
    data = CalibrationData.load(onnx_path.parent, checkpoint, texts, texts, calibration_texts=64)
    data.evaluation_labels, data.evaluation_texts = data.evaluation_labels[:64], data.evaluation_texts[:64]
    for precision in ("int8", "fp8"):
        tensorrt_qdq_onnx(onnx_path, precision, data, budget_points=100)  # random weights: accuracy means nothing here
        yield precision, onnx_path.with_name(layout.QDQ_ONNX_FILES[precision])


def build_check(trt, precision: str, onnx_path: Path, spec) -> dict:
    """Build `onnx_path` at `precision` with engine_from_onnx; what happened, as a dict."""
    from export.trt_engine import default_profile, engine_from_onnx
    from handler.errors import EngineBuildError

    engine = onnx_path.with_suffix(f".{precision}.plan")
    start = time.perf_counter()
    try:
        sidecar = engine_from_onnx(onnx_path, engine, default_profile(spec), precision=precision, trt=trt)
    except EngineBuildError as error:
        row = {"precision": precision, "onnx": onnx_path.name, "built": False, "error": str(error)[:2000]}
    else:
        row = {"precision": precision, "onnx": onnx_path.name, "built": True, "build_s": round(time.perf_counter() - start, 1),
               "engine_mib": round(engine.stat().st_size / 2**20, 1), "network": sidecar["network"]}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--texts", type=Path, required=True, help="label,txt CSV: calibration texts for the QDQ graphs")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_results")))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    import tensorrt_rtx_bindings as trt

    from bench.gpu_torchserve import make_model
    from export.onnx_export import onnx_from_checkpoint
    from export.trt_engine import ProfileRange, default_profile, engine_from_onnx, trtexec_command
    from handler.errors import EngineBuildError

    work = Path("/tmp/rtx_check")
    checkpoint = make_model(args.tokenizer, work / "checkpoint")
    onnx_path, spec = onnx_from_checkpoint(checkpoint, work / "export", max_length=128)
    report = {"tensorrt_rtx": trt.__version__, "onnx_mib": round(onnx_path.stat().st_size / 2**20, 1), "builds": []}
    for name, profile in (("default profile", default_profile(spec)), ("batch 1-256, seq 1-128", ProfileRange(1, 128, 256, 1, 64, 128))):
        engine = work / f"model_{profile.max_batch}.plan"
        print(trtexec_command(onnx_path, engine, spec, profile, "fp32", None), flush=True)
        start = time.perf_counter()
        sidecar = engine_from_onnx(onnx_path, engine, profile, precision="fp32", trt=trt)
        built = {"profile": name, "build_s": round(time.perf_counter() - start, 1), "engine_mib": round(engine.stat().st_size / 2**20, 1), "sidecar": sidecar}
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        deserialized = runtime.deserialize_cuda_engine(engine.read_bytes())
        built["deserialized"] = deserialized is not None
        report["builds"].append(built)
        print(json.dumps(built), flush=True)
    try:
        engine_from_onnx(onnx_path, work / "fp16.plan", default_profile(spec), precision="fp16", trt=trt)
        report["fp16_on_fp32_onnx"] = "built"
    except EngineBuildError as refusal:
        report["fp16_on_fp32_onnx"] = f"refused as designed: {refusal}"
    print(report["fp16_on_fp32_onnx"], flush=True)
    report["strongly_typed_builds"] = [build_check(trt, precision, path, spec) for precision, path in graphs_for_precisions(onnx_path, checkpoint, args.texts)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trt_rtx_build_check.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
