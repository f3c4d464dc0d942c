#!/usr/bin/env bash
# Build the bert_trt CPU image from a clone: docker/build.sh [--mar PATH] [--tag NAME] [--local-base]
#   --mar PATH     the archive to serve (default model_store/bert_trt.mar: run `make mar` first)
#   --local-base   build on a Debian bookworm base made here with debootstrap (no image registry needed);
#                  without it the base is the official python:3.11-slim-bookworm
set -euo pipefail
cd "$(dirname "$0")/.."
MAR=model_store/bert_trt.mar
TAG=bert-trt-serve:cpu
BASE=python:3.11-slim-bookworm
LOCAL_BASE=bert-trt-serve-base:bookworm
while [ $# -gt 0 ]; do
  case "$1" in
    --mar) MAR="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --local-base) BASE="$LOCAL_BASE"; shift ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
[ -f "$MAR" ] || { echo "no archive at $MAR: run 'make mar' (or pass --mar)" >&2; exit 1; }
PIP="${PIP:-.venv/bin/pip}"
if [ "$BASE" = "$LOCAL_BASE" ] && ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
  root=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,openjdk-17-jre-headless bookworm "$root/rootfs" >/dev/null
  tar -C "$root/rootfs" -c . | docker import - "$LOCAL_BASE" >/dev/null
  rm -rf "$root"
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/wheelhouse" "$context/app/model_store" "$context/app/tools"
"$PIP" download --quiet --dest "$context/wheelhouse" -r docker/requirements-serve.txt -c requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
cp docker/requirements-serve.txt "$context/wheelhouse/"
cp -r handler ops "$context/app/tools/"
find "$context/app" -name __pycache__ -prune -exec rm -rf {} +
cp docker/config.properties docker/entrypoint.sh "$context/app/"
cp "$MAR" "$context/app/model_store/bert_trt.mar"
cp docker/Dockerfile.cpu "$context/Dockerfile"
docker build --quiet --build-arg BASE="$BASE" --tag "$TAG" "$context"
docker image inspect "$TAG" --format "built $TAG: {{.Size}} bytes"
