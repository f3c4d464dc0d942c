#!/usr/bin/env bash
# One GPU call for issue 15's figures (see docs/gpu-and-tensorrt.md ("FP8 and quantized engines")): TensorRT-RTX builds of our
# fp16 / int8 / fp8 graphs, the FP8 goal run, the anchors, the GPU tests. Needs on the device:
# TensorRT-RTX's libs + bindings unpacked under /tmp/rtxsite (gpu-notes recipe), .carry from
# `python -m bench.prepare_device_bundle` with fp8_scales.json in .carry/default_model_dir.
set -u
export PYTHONPATH=.:/tmp/rtxsite HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
out=${OUT:-bench_results}
mkdir -p "$out"
python3 -m bench.trt_rtx_build_check --tokenizer .carry/default_model_dir/model --texts .carry/test.csv --out "$out" >"$out/rtx.log" 2>&1
echo "TensorRT-RTX check exit $?"; grep -a '"precision"' "$out/rtx.log"
python3 -m bench.gpu_fp8 --bundle .carry --out "$out" 2>&1 | grep -a -v "Warning\|Loading weights"
OUT="$out" python3 .carry/gpu_anchor.py >"$out/anchor.log" 2>&1
python3 -m pytest -q -m gpu tests/handler 2>&1 | tail -3
