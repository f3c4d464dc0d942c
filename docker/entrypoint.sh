#!/bin/sh
# Start TorchServe and the key renewer; on SIGTERM (docker stop) stop both cleanly and exit 0.
# MODEL_STORE (optional) replaces the config's model store (docker/gpu_entrypoint.sh sets it).
set -eu
APP="${BERT_TRT_APP:-/opt/bert-trt-serve}"
CONFIG="$APP/config.properties"
cd "$HOME/run"  # key_file.json and logs/ are written here
PYTHONPATH="$APP/tools" python -m ops.keys renew --config "$CONFIG" --key-dir . >> key_renewer.log 2>&1 &
RENEWER=$!
torchserve --start --ncs --ts-config "$CONFIG" --log-config "$APP/tools/ops/log4j2.xml" ${MODEL_STORE:+--model-store "$MODEL_STORE"}
stop() {
  torchserve --stop
  kill "$RENEWER" 2>/dev/null || true
  exit 0
}
trap stop TERM INT
sleep 2
while [ -f /tmp/.model_server.pid ] && kill -0 "$(cat /tmp/.model_server.pid)" 2>/dev/null; do
  sleep 1 &
  wait $! || true
done
echo "TorchServe exited" >&2
exit 1
