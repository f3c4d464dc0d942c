"""Probe on the GPU: does torch.compile under our per-bucket CUDA graphs beat plain eager kernels?

    python bench/gpu_compile_probe.py --out results/

BERT-base size (12 x 768, random weights), fp16, shapes 1x128 and 128x128. For each variant:
graph replay time alone (CUDA events) and the full backend call (host copies included), plus
compile time. The variants wrap the model in the backend's own `_CapturedBatch`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from handler.backends import _CapturedBatch  # noqa: E402

SHAPES = [(1, 128), (128, 128)]


class _CapturedWithoutMask(_CapturedBatch):
    """Same graph without an attention mask: SDPA may pick flash attention (only valid for unpadded batches)."""

    def _forward(self, model):
        return model(input_ids=self.static["input_ids"], token_type_ids=self.static["token_type_ids"]).logits


def replay_ms(captured: _CapturedBatch, iterations: int = 50) -> float:
    for _ in range(5):
        captured.graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        captured.graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def call_ms(captured: _CapturedBatch, batch: int, length: int, iterations: int = 50) -> float:
    ids = torch.randint(1000, 20000, (batch, length))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        captured.run(inputs, batch, length)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_results")))
    parser.add_argument("--max-autotune", action="store_true", help="also try mode=max-autotune-no-cudagraphs (~100 s per shape)")
    args = parser.parse_args()
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig(num_labels=3, attn_implementation="sdpa")).eval().cuda().half()
    variants = {
        "eager_kernels": (lambda: base, _CapturedBatch),
        "compile_default": (lambda: torch.compile(base, dynamic=False), _CapturedBatch),
        "eager_kernels_no_mask": (lambda: base, _CapturedWithoutMask),
        "compile_default_no_mask": (lambda: torch.compile(base, dynamic=False), _CapturedWithoutMask),
    }
    if "--max-autotune" in sys.argv:
        variants["compile_max_autotune"] = (lambda: torch.compile(base, mode="max-autotune-no-cudagraphs", dynamic=False), _CapturedBatch)
    rows = []
    pool = torch.cuda.graph_pool_handle()
    for name, (make, capture) in variants.items():
        torch._dynamo.reset()
        model = make()
        for batch, length in SHAPES:
            start = time.perf_counter()
            try:
                captured = capture(model, (batch, length), torch.device("cuda"), pool)
            except Exception as error:  # a failed variant is a result too
                rows.append({"variant": name, "batch": batch, "seq": length, "error": repr(error)[:300]})
                print(json.dumps(rows[-1]), flush=True)
                continue
            build_s = time.perf_counter() - start
            replay = replay_ms(captured)
            full = call_ms(captured, batch, length)
            row = {"variant": name, "batch": batch, "seq": length, "build_s": round(build_s, 1), "replay_ms": round(replay, 3),
                   "call_ms": round(full, 3), "seq_per_s_call": round(batch / full * 1000, 1)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_compile_probe.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
