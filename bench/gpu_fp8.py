"""FP8 goal run on the GPU: torch_cuda's float8 path beside float16, with accuracy and batch invariance.

    PYTHONPATH=.:.carry/site python -m bench.gpu_fp8 --bundle .carry --out results/

Run the anchors (../shared/tools/gpu_anchor.py) in the same call. Three parts:

1. Speed, BERT-base shape (12 x 768, random weights; FP8 scales calibrated here on 256 test texts):
   the backend's own CUDA graph per shape (`CapturedBatch`, the graph without mask that full batches
   get), float16 vs float8 (and float8 with `_scaled_mm`'s fast accumulation), at 1x128 and 128x128: graph replay alone (CUDA events) and the whole call
   (inputs in, logits back). Also a padded 128x128 batch (lengths uniform in 8..128, the masked
   graph) to show what padding costs, and the same batch packed (`cuda_packing`: GEMMs on real tokens).
   Then the default model over the test texts at natural lengths in batches of 128, packing off and on.
2. Accuracy, default model (fine-tuned MiniLM, weights carried in fp16, fp8_scales.json written by
   `export.quantize --write torch-fp8` from train texts): every test text through the torch_cuda
   backend in float16 and float8, against the test labels and the CPU float32 reference probabilities.
3. Batch invariance, default model, float8: 96 texts alone vs inside batches of 37 shuffled others.

Writes fp8_goal.json (the issue's keys) and fp8_runs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from bench.gpu_inprocess import make_bert_base
from bench.gpu_kernel_probe import padded_batch, replay_ms
from bench.timing import full_batch, median_wall_ms
from handler import layout
from handler.backends.cuda_graphs import CapturedBatch
from handler.backends.torch_cuda import build_cuda_model, build_fp8_model
from handler.classifier import load_classifier, softmax
from handler.settings import HandlerSettings, TorchCudaOptions
from training.data import read_labelled_csv

SHAPES = ((1, 128), (128, 128))


def calibrate_bert_base(model_dir: Path, texts: list[str]) -> None:
    """fp8_scales.json for the random BERT-base model, from `texts` (float32 fused module on the GPU)."""
    from export.quantize import CalibrationData, torch_batches
    from handler.kernels.fp8_bert import calibrate
    from handler.kernels.fused_bert import FusedBertClassifier
    from handler.backends.base import load_hf_classifier
    from handler.spec import ModelSpec
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir / layout.CHECKPOINT_DIR, local_files_only=True)
    data = CalibrationData(tokenizer, ModelSpec.load(model_dir), texts, "test.csv", 0, [], [], "")
    fused = FusedBertClassifier.from_hf(load_hf_classifier(model_dir, dtype=torch.float32)).cuda().eval()
    batches = ([tensor.cuda() for tensor in batch] for batch in torch_batches(data, texts))
    calibrate(fused, batches, "test.csv", 0).save(model_dir / layout.FP8_SCALES_FILE)


def speed(model_dir: Path) -> list[dict]:
    device = torch.device("cuda", 0)
    fast = build_fp8_model(model_dir, device)
    fast.module.fast_accumulation = True
    models = {"float16": build_cuda_model(model_dir, device, torch.float16), "float8": build_fp8_model(model_dir, device), "float8_fast_accum": fast}
    rows, keep_alive = [], []
    pool = torch.cuda.graph_pool_handle()
    for name, model in models.items():
        for batch, length in SHAPES:
            captured = CapturedBatch(model.forward, (batch, length), device, pool, masked=False)
            inputs = full_batch(batch, length)
            call = median_wall_ms(lambda: captured.run(inputs, batch, length), iterations=200, warmup=20)
            rows.append({"dtype": name, "batch": batch, "seq": length, "padded": False, "replay_ms": round(replay_ms(captured, 100), 4),
                         "call_ms": round(call, 4), "seq_per_s_call": round(batch / call * 1000, 1)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            keep_alive.append(captured)
        padded = {key: value.numpy() for key, value in padded_batch(128, 128).items()}
        captured = CapturedBatch(model.forward, (128, 128), device, pool, masked=True)
        call = median_wall_ms(lambda: captured.run(padded, 128, 128), iterations=200, warmup=20)
        real = int(padded["attention_mask"].sum())
        rows.append({"dtype": name, "batch": 128, "seq": 128, "padded": True, "real_token_share": round(real / 128**2, 3),
                     "replay_ms": round(replay_ms(captured, 100), 4), "call_ms": round(call, 4), "seq_per_s_call": round(128 / call * 1000, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        keep_alive.append(captured)
        if model.fused:  # the same padded batch packed (cuda_packing): GEMMs on the real tokens only, eagerly
            graphed = captured.run(padded, 128, 128)
            packed_logits = packed_call(model, padded, device)
            call = median_wall_ms(lambda: packed_call(model, padded, device), iterations=100, warmup=10)
            rows.append({"dtype": name, "batch": 128, "seq": 128, "padded": True, "packed": True, "call_ms": round(call, 4),
                         "seq_per_s_call": round(128 / call * 1000, 1),
                         "max_abs_prob_diff_vs_graph": round(float((torch.softmax(packed_logits, -1) - torch.softmax(graphed, -1)).abs().max()), 5)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def packed_call(model, inputs: dict, device: torch.device) -> torch.Tensor:
    """What the backend's packed path does for one batch: inputs to the GPU, packed forward, logits back."""
    from handler.kernels.fused_bert import Packing

    with torch.inference_mode():
        on_device = {name: torch.from_numpy(value).to(device, non_blocking=True) for name, value in inputs.items()}
        packing = Packing.from_mask(inputs["attention_mask"], device)
        return model.module(on_device["input_ids"], on_device["token_type_ids"], on_device["attention_mask"], packing).float().cpu()


def realistic(bundle: Path) -> list[dict]:
    """The default model over every test text at natural lengths, batches of 128 (tokenization included):
    texts/s per dtype with and without packing, and how far packing moves a probability."""
    import time

    _, texts = read_labelled_csv(bundle / "test.csv")
    texts = texts[: len(texts) // 128 * 128]
    rows, baseline = [], {}
    for dtype in ("float16", "float8"):
        for packing in (False, True):
            settings = HandlerSettings(backend="torch_cuda", torch_cuda=TorchCudaOptions(dtype=dtype, packing=packing))
            classifier, _ = load_classifier(bundle / "default_model_dir", settings, gpu_id=0)
            probabilities = np.concatenate([softmax(classifier.logits(texts[i : i + 128])) for i in range(0, len(texts), 128)])
            start = time.perf_counter()
            for _ in range(3):
                for i in range(0, len(texts), 128):
                    classifier.logits(texts[i : i + 128])
            seconds = (time.perf_counter() - start) / 3
            baseline.setdefault(dtype, probabilities)
            rows.append({"dtype": dtype, "packing": packing, "texts": len(texts), "texts_per_s": round(len(texts) / seconds, 1),
                         "max_abs_prob_diff_vs_unpacked": float(np.abs(probabilities - baseline[dtype]).max())})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def classifier_probabilities(model_dir: Path, dtype: str, texts: list[str], batch: int = 32):
    settings = HandlerSettings(backend="torch_cuda", torch_cuda=TorchCudaOptions(dtype=dtype))
    classifier, _ = load_classifier(model_dir, settings, gpu_id=0)
    probabilities = np.concatenate([softmax(classifier.logits(texts[i : i + batch])) for i in range(0, len(texts), batch)])
    return classifier, probabilities


def accuracy_and_invariance(bundle: Path) -> dict:
    model_dir = bundle / "default_model_dir"
    labels, texts = read_labelled_csv(bundle / "test.csv")
    reference = np.load(bundle / "reference_probs.npy")
    names = json.loads((model_dir / layout.SPEC_FILE).read_text())["id2label"]
    label_ids = np.array([int({v: k for k, v in names.items()}[label]) for label in labels])
    result = {"texts": len(texts), "accuracy_fp32_cpu": float((reference.argmax(1) == label_ids).mean())}
    for dtype in ("float16", "float8"):
        classifier, probabilities = classifier_probabilities(model_dir, dtype, texts)
        result[dtype] = {
            "described": classifier.backend.describe(),
            "accuracy": float((probabilities.argmax(1) == label_ids).mean()),
            "argmax_agreement_with_fp32": float((probabilities.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_prob_diff_vs_fp32": float(np.abs(probabilities - reference).max()),
        }
        print(dtype, json.dumps(result[dtype]), flush=True)
        if dtype == "float8":
            rng = random.Random(0)
            chosen = rng.sample(range(len(texts)), 96)
            alone = np.concatenate([softmax(classifier.logits([texts[i]])) for i in chosen])
            worst = 0.0
            for position, index in enumerate(chosen):
                others = rng.sample(range(len(texts)), 36)
                batch = [texts[j] for j in others[:18]] + [texts[index]] + [texts[j] for j in others[18:]]
                inside = softmax(classifier.logits(batch))[18]
                worst = max(worst, float(np.abs(inside - alone[position]).max()))
            result["batch_invariance_max_abs"] = worst
            print("batch invariance max |dp|", worst, flush=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path(".carry"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_results")))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _, texts = read_labelled_csv(args.bundle / "test.csv")
    base = make_bert_base(Path("/tmp/fp8_bert_base"), args.bundle / "default_model_dir" / layout.CHECKPOINT_DIR)
    calibrate_bert_base(base, texts[:256])
    rows = speed(base)
    realistic_rows = realistic(args.bundle)
    quality = accuracy_and_invariance(args.bundle)
    pick = {(r["dtype"], r["batch"], r["padded"]): r for r in rows if not r.get("packed")}
    goal = {
        "gpu": torch.cuda.get_device_name(),
        "shape": "BERT-base (12 x 768), random weights; CUDA graph per shape, whole backend call",
        "seq_per_s_128x128": pick[("float8", 128, False)]["seq_per_s_call"],
        "ms_1x128": pick[("float8", 1, False)]["call_ms"],
        "fp16_seq_per_s_128x128": pick[("float16", 128, False)]["seq_per_s_call"],
        "fp16_ms_1x128": pick[("float16", 1, False)]["call_ms"],
        "accuracy_delta_points": round(100 * (quality["float8"]["accuracy"] - quality["accuracy_fp32_cpu"]), 2),
        "batch_invariance_max_abs": quality["batch_invariance_max_abs"],
    }
    print(json.dumps(goal, indent=1), flush=True)
    (args.out / "fp8_goal.json").write_text(json.dumps(goal, indent=1))
    (args.out / "fp8_runs.json").write_text(json.dumps({"speed": rows, "realistic": realistic_rows, "quality": quality}, indent=1))


if __name__ == "__main__":
    main()
