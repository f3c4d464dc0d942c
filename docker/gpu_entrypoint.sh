#!/bin/sh
# GPU container start: the TensorRT engine for this GPU and TensorRT (from the engine cache volume, built
# there at first start), then TorchServe through entrypoint.sh. Without a GPU or TensorRT, or if the build
# fails, the archive is served as built (torch_cuda on a GPU, the CPU backends without one).
set -eu
APP="${BERT_TRT_APP:-/opt/bert-trt-serve}"
STORE="$HOME/run/model_store"
mkdir -p "$STORE"
if ! PYTHONPATH="$APP/tools${PYTHONPATH:+:$PYTHONPATH}" python -m export.engine_cache --mar "$APP/model_store/bert_trt.mar" \
       --cache "${BERT_TRT_ENGINE_CACHE:-/engines}" --out "$STORE"; then
  echo "engine cache step failed: serving the archive as built" >&2
  cp "$APP/model_store/bert_trt.mar" "$STORE/bert_trt.mar"
fi
MODEL_STORE="$STORE" exec "$APP/entrypoint.sh"
