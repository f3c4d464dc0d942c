#!/bin/sh
# Start TorchServe and the key renewer; on SIGTERM (docker stop) stop both cleanly and exit 0.
set -eu
CONFIG=/opt/bert-trt-serve/config.properties
cd "$HOME/run"  # key_file.json and logs/ are written here
PYTHONPATH=/opt/bert-trt-serve/tools python -m ops.keys renew --config "$CONFIG" --key-dir . >> key_renewer.log 2>&1 &
RENEWER=$!
torchserve --start --ncs --ts-config "$CONFIG"
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
