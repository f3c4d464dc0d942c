#!/usr/bin/env bash
# Build the bert_trt image from a clone: docker/build.sh [--gpu] [--mar PATH] [--tag NAME] [--local-base]
#   --mar PATH     the archive to serve (default model_store/bert_trt.mar, or model_store/gpu/bert_trt.mar
#                  with --gpu: `make mar` / `make gpu-mar` make them)
#   --local-base   CPU image on a Debian bookworm base made here with debootstrap (no image registry needed);
#                  without it the base is the official python:3.11-slim-bookworm
#   --kserve       the KServe server image (docker/Dockerfile.kserve: kserve_server, no TorchServe, no torch)
#   --gpu          the GPU image (docker/Dockerfile.gpu) on NVIDIA's TensorRT base from nvcr.io, with a
#                  wheelhouse for its Python 3.12; needs a registry that serves nvcr.io (not run here)
#   --kserve --gpu the KServe server on that GPU base (docker/Dockerfile.kserve-gpu: kserve_server with torch for
#                  torch_cuda, the GPU archive; deploy/kserve/custom-predictor.yaml's bert-trt-gpu; not run here)
set -euo pipefail
cd "$(dirname "$0")/.."
MAR=""
TAG=""
BASE=""
LOCAL_BASE=bert-trt-serve-base:bookworm
GPU=0
KSERVE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mar) MAR="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --local-base) BASE="$LOCAL_BASE"; shift ;;
    --gpu) GPU=1; shift ;;
    --kserve) KSERVE=1; shift ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
if [ "$GPU" = 1 ] && [ "$BASE" = "$LOCAL_BASE" ]; then
  echo "--local-base is for the CPU image; the GPU image needs NVIDIA's TensorRT base" >&2; exit 2
fi
if [ "$GPU" = 1 ] && [ "$KSERVE" = 1 ]; then
  MAR="${MAR:-model_store/gpu/bert_trt.mar}"; TAG="${TAG:-bert-trt-serve:kserve-gpu}"
  DOCKERFILE=docker/Dockerfile.kserve-gpu; REQUIREMENTS=docker/requirements-kserve-gpu.txt
  WHEEL_TARGET=(--python-version 3.12 --platform manylinux_2_28_x86_64 --only-binary=:all:)
  TOOLS=(handler kserve_server); APP_FILES=()
elif [ "$GPU" = 1 ]; then
  MAR="${MAR:-model_store/gpu/bert_trt.mar}"; TAG="${TAG:-bert-trt-serve:gpu}"
  DOCKERFILE=docker/Dockerfile.gpu; REQUIREMENTS=docker/requirements-gpu.txt
  WHEEL_TARGET=(--python-version 3.12 --platform manylinux_2_28_x86_64 --only-binary=:all:)
  TOOLS=(handler ops export); APP_FILES=(docker/config.properties docker/entrypoint.sh docker/gpu_entrypoint.sh)
elif [ "$KSERVE" = 1 ]; then
  MAR="${MAR:-model_store/bert_trt.mar}"; TAG="${TAG:-bert-trt-serve:kserve-cpu}"; BASE="${BASE:-python:3.11-slim-bookworm}"
  DOCKERFILE=docker/Dockerfile.kserve; REQUIREMENTS=docker/requirements-kserve.txt
  WHEEL_TARGET=()
  TOOLS=(handler kserve_server); APP_FILES=()
else
  MAR="${MAR:-model_store/bert_trt.mar}"; TAG="${TAG:-bert-trt-serve:cpu}"; BASE="${BASE:-python:3.11-slim-bookworm}"
  DOCKERFILE=docker/Dockerfile.cpu; REQUIREMENTS=docker/requirements-serve.txt
  WHEEL_TARGET=()
  TOOLS=(handler ops); APP_FILES=(docker/config.properties docker/entrypoint.sh)
fi
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
"$PIP" download --quiet "${WHEEL_TARGET[@]}" --dest "$context/wheelhouse" -r "$REQUIREMENTS" -c requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
cp "$REQUIREMENTS" "$context/wheelhouse/"
cp -r "${TOOLS[@]}" "$context/app/tools/"
find "$context/app" -name __pycache__ -prune -exec rm -rf {} +
[ ${#APP_FILES[@]} -eq 0 ] || cp "${APP_FILES[@]}" "$context/app/"
cp "$MAR" "$context/app/model_store/bert_trt.mar"
cp "$DOCKERFILE" "$context/Dockerfile"
docker build --quiet ${BASE:+--build-arg BASE="$BASE"} --tag "$TAG" "$context"
docker image inspect "$TAG" --format "built $TAG: {{.Size}} bytes"
