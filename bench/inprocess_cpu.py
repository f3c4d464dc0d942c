"""In-process CPU benchmark: every CPU backend variant against the stock-style baseline, same run.

    .venv/bin/python -m bench.inprocess_cpu            # default model, writes bench_results/cpu_inprocess.*
    .venv/bin/python -m bench.inprocess_cpu --quick    # seconds-long smoke (CI)

Realistic workload: the default test split's texts with their natural length mix, in batches of
32 (what TorchServe hands a worker at batchSize 32). Reports texts/s and its ratio to the
baseline, per-batch p50/p99, accuracy on the whole test split (must stay within 0.5 points of
fp32), batch invariance (max |Δp| of a text alone vs inside its batch of 32, over 64 texts; a
default must stay within 1e-4), plus a synthetic batch x sequence grid. Threads: all cores, like
one worker. The shipped int8 is the export's calibrated static model; the dynamic-int8 and the
ONNX Runtime transformer-optimizer (fused) variants are made here from model.onnx for comparison.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent

from bench.timing import full_batch, median_wall_ms
from training.data import read_labelled_csv
from handler import layout
from handler.backends.onnxruntime import OnnxRuntimeBackend
from handler.backends.torch_cpu import TorchCpuBackend
from handler.classifier import TextClassifier, softmax
from handler.settings import OnnxRuntimeOptions, TorchCpuOptions
from handler.spec import ModelSpec
from handler.tokenizer import load_tokenizer
from harness.models import model_dir_like_mar

#: name: (backend, options, model folder: "shipped" (the export), "dynamic" (dynamic int8 made here), "fused" (optimizer output made here))
VARIANTS = {
    "torch_pad_longest": (TorchCpuBackend, TorchCpuOptions(sub_batch=None), "shipped"),
    "torch_sorted_sub8": (TorchCpuBackend, TorchCpuOptions(sub_batch=8), "shipped"),
    "torch_dynamic_int8_sub8": (TorchCpuBackend, TorchCpuOptions(sub_batch=8, int8=True), "shipped"),
    "ort_sub8": (OnnxRuntimeBackend, OnnxRuntimeOptions(sub_batch=8, int8=False), "shipped"),
    "ort_fused_fp32_sub8": (OnnxRuntimeBackend, OnnxRuntimeOptions(sub_batch=8, int8=False), "fused"),
    "ort_dynamic_int8_sub8": (OnnxRuntimeBackend, OnnxRuntimeOptions(sub_batch=8, int8=True), "dynamic"),
    "ort_static_int8_sub8": (OnnxRuntimeBackend, OnnxRuntimeOptions(sub_batch=8, int8=True), "shipped"),
    "ort_static_int8_whole_batch": (OnnxRuntimeBackend, OnnxRuntimeOptions(sub_batch=None, int8=True), "shipped"),
}


def comparison_model_dir(model_dir: Path, kind: str, work: Path) -> Path:
    """`model_dir` itself ("shipped"), or a copy whose ONNX file is made here: "dynamic" (ONNX Runtime's
    dynamic quantizer, per-channel weights: the int8 shipped before calibration) or "fused" (ONNX Runtime's
    transformer optimizer, model type bert)."""
    if kind == "shipped":
        return model_dir
    target = work / kind
    if not target.is_dir():
        shutil.copytree(model_dir, target)
        if kind == "dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(model_dir / layout.ONNX_FILE), str(target / layout.INT8_ONNX_FILE), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
        else:
            from onnxruntime.transformers.optimizer import optimize_model
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(model_dir / layout.CHECKPOINT_DIR, local_files_only=True)
            fused = optimize_model(str(model_dir / layout.ONNX_FILE), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
            fused.save_model_to_file(str(target / layout.ONNX_FILE))
    return target


def batch_invariance(classifier: TextClassifier, texts: list[str], checked: int = 64) -> float:
    """Largest |Δp| between a text classified alone and inside its batch of 32."""
    worst = 0.0
    for index in range(min(checked, len(texts))):
        first = (index // 32) * 32
        batch = texts[first : first + 32]
        alone = softmax(classifier.logits([texts[index]]))[0]
        together = softmax(classifier.logits(batch))[index - first]
        worst = max(worst, float(np.abs(alone - together).max()))
    return worst


def batches(texts: list[str], size: int = 32) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def measure(predict, texts: list[str]) -> dict:
    """texts/s and per-batch latency of predict(list_of_texts) over batches of 32."""
    predict(texts[:32])  # warm-up
    batch_ms = []
    start = time.perf_counter()
    for batch in batches(texts):
        t0 = time.perf_counter()
        predict(batch)
        batch_ms.append((time.perf_counter() - t0) * 1000)
    seconds = time.perf_counter() - start
    return {
        "texts_per_s": round(len(texts) / seconds, 1),
        "batch_p50_ms": round(float(np.percentile(batch_ms, 50)), 1),
        "batch_p99_ms": round(float(np.percentile(batch_ms, 99)), 1),
    }


def stock_predict(model_dir: Path):
    """The baseline handler, called exactly as TorchServe would (one request per text)."""
    from bench.stock_handler import StockStyleHandler
    from harness.inprocess import worker_context

    handler = StockStyleHandler()
    context = worker_context(model_dir)
    handler.initialize(context)
    return lambda texts: handler.handle([{"body": t.encode()} for t in texts], context)


def accuracy(classifier: TextClassifier, texts: list[str], gold: list[str]) -> float:
    predicted = []
    for batch in batches(texts):
        predicted += [p["label"] for p in classifier.classify(batch)]
    return sum(p == g for p, g in zip(predicted, gold)) / len(gold)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=REPO / "artifacts/default/checkpoint")
    parser.add_argument("--export-dir", type=Path, default=REPO / "artifacts/default/export")
    parser.add_argument("--test-csv", type=Path, default=REPO / "artifacts/data/test.csv")
    parser.add_argument("--speed-texts", type=int, default=1024, help="texts timed per variant (accuracy always uses the whole split)")
    parser.add_argument("--out", type=Path, default=REPO / "bench_results")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 texts, tiny grid")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)

    gold, texts = read_labelled_csv(args.test_csv)
    if args.quick:
        gold, texts, args.speed_texts = gold[:64], texts[:64], 64
    speed_texts = texts[: args.speed_texts]
    work = args.out / "cpu_model_dir"
    shutil.rmtree(work, ignore_errors=True)
    model_dir = model_dir_like_mar(args.checkpoint, args.export_dir, work)
    spec = ModelSpec.load(model_dir)
    tokenizer = load_tokenizer(model_dir)

    shutil.rmtree(work.parent / "cpu_comparison_models", ignore_errors=True)
    rows = [{"variant": "stock_baseline", **measure(stock_predict(model_dir), speed_texts), "accuracy": None, "batch_invariance_max_dp": None}]
    print(json.dumps(rows[0]), flush=True)
    grid = [(1, 32), (32, 32)] if args.quick else [(1, 32), (1, 128), (32, 32), (32, 128)]
    grid_rows = []
    for name, (backend_class, options, kind) in VARIANTS.items():
        backend = backend_class(comparison_model_dir(model_dir, kind, work.parent / "cpu_comparison_models"), spec, replace(options, num_threads=threads)).load()
        classifier = TextClassifier(tokenizer, backend, spec)
        row = {"variant": name, **measure(classifier.classify, speed_texts), "accuracy": round(accuracy(classifier, texts, gold), 4)}
        row["batch_invariance_max_dp"] = round(batch_invariance(classifier, speed_texts, 16 if args.quick else 64), 6)
        rows.append(row)
        print(json.dumps(row), flush=True)
        for batch, length in grid:
            inputs = full_batch(batch, length)
            ms = median_wall_ms(lambda: backend.infer(inputs), iterations=3 if args.quick else 10, warmup=1)
            grid_rows.append({"variant": name, "batch": batch, "seq": length, "ms": round(ms, 2), "seq_per_s": round(batch / ms * 1000, 1)})

    baseline = rows[0]["texts_per_s"]
    fp32_accuracy = rows[1]["accuracy"]
    for row in rows:
        row["speedup_vs_stock"] = round(row["texts_per_s"] / baseline, 2)
        row["accuracy_delta_points"] = None if row["accuracy"] is None else round(100 * (row["accuracy"] - fp32_accuracy), 2)
    print(f"\n{'variant':28} {'texts/s':>9} {'x stock':>8} {'p50 ms':>8} {'p99 ms':>8} {'accuracy':>9} {'Δ pts':>6} {'max |Δp| batched':>17}")
    for row in rows:
        cells = [row["accuracy"], row["accuracy_delta_points"], row["batch_invariance_max_dp"]]
        accuracy_cell, delta_cell, invariance_cell = ("-" if cell is None else cell for cell in cells)
        print(f"{row['variant']:28} {row['texts_per_s']:9.1f} {row['speedup_vs_stock']:8.2f} {row['batch_p50_ms']:8.1f} {row['batch_p99_ms']:8.1f} "
              f"{accuracy_cell:>9} {delta_cell:>6} {invariance_cell:>17}")  # fmt: skip
    for name, table in (("cpu_inprocess.csv", rows), ("cpu_grid.csv", grid_rows)):
        with (args.out / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    plot(rows, args.out / "cpu_inprocess.png", threads)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(work.parent / "cpu_comparison_models", ignore_errors=True)


def plot(rows: list[dict], path: Path, threads: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4))
    axis.barh([r["variant"] for r in rows], [r["texts_per_s"] for r in rows], color=["grey"] + ["tab:blue"] * (len(rows) - 1))
    for index, row in enumerate(rows):
        axis.text(row["texts_per_s"], index, f" {row['speedup_vs_stock']}x", va="center")
    axis.set(xlabel="texts / s (realistic test texts, batches of 32)", title=f"CPU in-process, {threads} threads")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
