#!/usr/bin/env bash
# One GPU call for issue 21's figures (docs/operations.md ("Backends and threads")): the GPU tests (the concurrency contract
# on torch_cuda with CUDA graphs, float16 and float8; the KServe door's batcher with 2 and 4 batches in flight)
# and bench/door_in_flight.py on the default model (1 / 2 / 4 in flight, and 2 with the lock removed).
# Needs .carry from `python -m bench.prepare_device_bundle` (the default model in fp16 + its test texts).
set -u
export PYTHONPATH=.:.carry/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
out=${OUT:-bench_results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu.txt"
[ "${SKIP_TESTS:-0}" = 1 ] || python3 -m pytest -q -p no:cacheprovider -m gpu tests/handler tests/kserve_server/test_door_on_gpu.py -rs 2>&1 | tee "$out/gpu_tests.txt" | tail -8
python3 -m bench.door_in_flight --model-dir .carry/default_model_dir --texts .carry/test.csv --gpu-id 0 --seconds "${SECONDS_PER_SETTING:-10}" --in-flight "${IN_FLIGHT:-1,2,4}" --out "$out" 2>&1 \
  | grep -a -v "Warning\|Loading weights" | tee "$out/door_in_flight.txt" | tail -8
