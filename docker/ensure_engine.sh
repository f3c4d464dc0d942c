#!/usr/bin/env bash
# Make a Docker engine answer on this machine: use a running one, else start dockerd, else (as root, on
# Debian/Ubuntu) install docker.io and debootstrap first. Exit 0 when `docker info` answers, 3 when no
# engine can run here (the caller skips, saying why), anything else on an unexpected failure.
set -uo pipefail
docker info >/dev/null 2>&1 && exit 0
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "no Docker engine, and installing one needs root and apt-get" >&2; exit 3
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap >/tmp/bert_trt_docker_install.log 2>&1 \
    || { echo "apt-get install docker.io debootstrap failed (see /tmp/bert_trt_docker_install.log)" >&2; exit 3; }
fi
if [ "$(id -u)" != 0 ]; then echo "dockerd is not running and starting it needs root" >&2; exit 3; fi
nohup dockerd >/tmp/bert_trt_dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "dockerd did not answer within 60 s (see /tmp/bert_trt_dockerd.log)" >&2
exit 3
