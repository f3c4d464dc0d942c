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



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_results")))
    args = parser.parse_args()
    import tensorrt_rtx_bindings as trt

    from bench.gpu_torchserve import make_model
    from export.onnx_export import onnx_from_checkpoint
    from export.trt_engine import ProfileRange, default_profile, engine_from_onnx, trtexec_command
    from handler.errors import EngineBuildError

    work = Path("/tmp/rtx_check")
    checkpoint = make_model(args.tokenizer, work / "checkpoint")
    onnx_path, spec = onnx_from_checkpoint(checkpoint, work / "export", max_length=128)
    report = {"tensorrt_rtx": trt.__version__, "onnx_mib": round(onnx_path.stat().st_size / 2**20, 1), "builds": []}
    for name, profile in (("default profile", default_profile(spec, 32)), ("batch 1-128, seq 1-128", ProfileRange(1, 64, 128, 1, 64, 128))):
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
        engine_from_onnx(onnx_path, work / "fp16.plan", default_profile(spec, 32), precision="fp16", trt=trt)
        report["fp16_on_fp32_onnx"] = "built"
    except EngineBuildError as refusal:
        report["fp16_on_fp32_onnx"] = f"refused as designed: {refusal}"
    print(report["fp16_on_fp32_onnx"], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trt_rtx_build_check.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
