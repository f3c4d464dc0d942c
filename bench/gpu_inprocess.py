"""GPU check and benchmark of the handler, driven in-process the way a TorchServe worker drives it.

Run on a CUDA machine after `python -m bench.prepare_device_bundle` (see docs/gpu-and-tensorrt.md):

    PYTHONPATH=.:.carry/site python -m bench.gpu_inprocess --out results/

1. Accuracy: the default model's whole test split goes through `BertTrtHandler.handle` in
   TorchServe-style batches of 32 requests (context with gpu_id=0); probabilities are compared
   with the CPU fp32 reference made by the torch_cpu backend (argmax agreement, max |Δprob|).
   Same for a BERT-base-sized model with random weights (reference computed here on the CPU).
2. Speed: backend latency / throughput over batch x sequence for each variant, and the realistic
   workload (test texts, natural lengths, batches of 32 requests, tokenization included).
Writes gpu_accuracy.json, gpu_grid.csv, gpu_realistic.csv and gpu_grid.png into --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent

from bench.timing import full_batch, median_wall_ms
from handler import layout
from training.data import read_labelled_csv
from harness.inprocess import handle_batch, started_handler

# handler settings per variant: the default (fused BERT + CUDA graphs), the Hugging Face module under
# the same graphs, and no graphs at all
VARIANTS = {"graphs": {"cuda_graphs": True}, "graphs_hf_module": {"cuda_graphs": True, "cuda_fused": False}, "eager": {"cuda_graphs": False}}
GRID = [(b, s) for s in (32, 64, 128) for b in (1, 8, 32, 64, 128)]


def run_handler(handler, context, texts: list[str], requests_per_batch: int = 32) -> tuple[np.ndarray, list[float]]:
    """Probabilities for every text via handle(), and the wall time of each batch (ms)."""
    probabilities, batch_ms = [], []
    labels = handler.classifier.labels
    for first in range(0, len(texts), requests_per_batch):
        payloads = [t.encode() for t in texts[first : first + requests_per_batch]]
        start = time.perf_counter()
        responses, statuses = handle_batch(handler, context, payloads)
        batch_ms.append((time.perf_counter() - start) * 1000)
        assert all(code == 200 for code, _ in statuses), statuses
        probabilities += [[r["probabilities"][label] for label in labels] for r in responses]
    return np.array(probabilities), batch_ms


def compare(probabilities: np.ndarray, reference: np.ndarray) -> dict:
    return {
        "texts": len(reference),
        "argmax_agreement": float((probabilities.argmax(1) == reference.argmax(1)).mean()),
        "max_abs_prob_diff": float(np.abs(probabilities - reference).max()),
    }


def make_bert_base(directory: Path, tokenizer_dir: Path) -> Path:
    """BERT-base-sized classifier (12 x 768, 3 labels), seeded random weights, laid out as the worker
    sees it; classifier scaled so that probabilities are not near-ties (argmax comparisons would be noise)."""
    from handler import layout
    from handler.spec import ModelSpec
    from harness.models import LABELS, random_bert_checkpoint

    random_bert_checkpoint(directory / layout.CHECKPOINT_DIR, tokenizer_dir, classifier_scale=50)
    ModelSpec(id2label=dict(enumerate(LABELS)), max_length=128).save(directory)
    return directory


def cpu_reference(model_dir: Path, texts: list[str]) -> np.ndarray:
    """CPU fp32 probabilities of the torch_cpu backend, in batches of 32 as the GPU side runs them."""
    from harness.models import torch_cpu_classifier

    classifier = torch_cpu_classifier(model_dir, os.cpu_count() or 1)
    return np.concatenate([torch.softmax(torch.from_numpy(classifier.logits(texts[i : i + 32])), -1).numpy() for i in range(0, len(texts), 32)])


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=REPO / ".carry")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_results")))
    parser.add_argument("--bert-base-texts", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run (64 texts, 2 shapes), e.g. on a CPU")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    grid = [(1, 32), (8, 32)] if args.quick else GRID
    args.out.mkdir(parents=True, exist_ok=True)

    _, texts = read_labelled_csv(args.bundle / "test.csv")
    reference = np.load(args.bundle / "reference_probs.npy")
    if args.quick:
        texts, reference, args.bert_base_texts = texts[:64], reference[:64], 8
    models = {"minilm_default": args.bundle / "default_model_dir"}
    models["bert_base"] = make_bert_base(Path("/tmp/bert_base_model"), models["minilm_default"] / layout.CHECKPOINT_DIR)
    bert_texts = texts[: args.bert_base_texts]
    references = {"minilm_default": (texts, reference), "bert_base": (bert_texts, cpu_reference(models["bert_base"], bert_texts))}

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU smoke run)"
    report = {"torch": torch.__version__, "gpu": gpu, "checks": [], "memory": []}
    grid_rows, realistic_rows = [], []
    for model_name, model_dir in models.items():
        for variant, options in VARIANTS.items():
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            handler, context = started_handler(model_dir, gpu_id=0, model_yaml={"minWorkers": 1, "handler": {"backend": "auto", **options}})
            init_s = time.perf_counter() - start
            backend = handler.classifier.backend
            check_texts, check_reference = references[model_name]
            probabilities, _ = run_handler(handler, context, check_texts)
            result = {"model": model_name, "variant": variant, "backend": backend.name, "init_s": round(init_s, 1),
                      "skipped": handler.skipped_backends, **compare(probabilities, check_reference)}  # fmt: skip
            report["checks"].append(result)
            print(json.dumps(result), flush=True)

            for _ in range(2):  # realistic workload: natural lengths, 32 requests a batch, tokenization included
                _, batch_ms = run_handler(handler, context, texts)
            realistic = {"model": model_name, "variant": variant, "texts_per_s": round(len(texts) / (sum(batch_ms) / 1000), 1),
                         "batch_p50_ms": round(float(np.percentile(batch_ms, 50)), 3), "batch_p99_ms": round(float(np.percentile(batch_ms, 99)), 3)}  # fmt: skip
            realistic_rows.append(realistic)
            print(json.dumps(realistic), flush=True)

            for batch, length in grid:
                inputs = full_batch(batch, length)  # backend.infer returns CPU logits: the GPU work is finished
                ms = median_wall_ms(lambda: backend.infer(inputs), iterations=30, warmup=5)
                row = {"model": model_name, "variant": variant, "batch": batch, "seq": length, "ms": round(ms, 3), "seq_per_s": round(batch / ms * 1000, 1)}
                grid_rows.append(row)
                print(json.dumps(row), flush=True)
            peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")
            report["memory"].append({"model": model_name, "variant": variant, "peak_gpu_mib": round(peak, 1)})
            del handler, context, backend
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    (args.out / "gpu_accuracy.json").write_text(json.dumps(report, indent=1))
    for name, rows in (("gpu_grid.csv", grid_rows), ("gpu_realistic.csv", realistic_rows)):
        with (args.out / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    plot_grid(grid_rows, args.out / "gpu_grid.png")
    print(json.dumps(report["memory"]))


def plot_grid(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, model in zip(axes, ("minilm_default", "bert_base")):
        for variant in VARIANTS:
            for length in (32, 128):
                points = [r for r in rows if r["model"] == model and r["variant"] == variant and r["seq"] == length]
                axis.plot([p["batch"] for p in points], [p["seq_per_s"] for p in points], marker="o", label=f"{variant}, seq {length}")
        axis.set(xscale="log", yscale="log", xlabel="batch", ylabel="sequences / s", title=model)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
