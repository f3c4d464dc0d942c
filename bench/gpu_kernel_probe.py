"""Probe on the GPU: which model and kernel choices under our per-bucket CUDA graphs are fastest?

    PYTHONPATH=.:.carry/site python -m bench.gpu_kernel_probe --out results/ [--compile]

BERT-base size (12 x 768, random weights), fp16, shapes 1x128, 32x128 and 128x128. Each variant is
the torch_cuda backend's own forward function captured in its own `CapturedBatch`; reported: graph
replay time alone (CUDA events), the full backend call (host copies and logits back included), and
agreement with the float32 Hugging Face module on a padded batch (max |Δprob|, argmax agreement).
"""

from __future__ import annotations

import argparse
import copy as copy_module
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent

from bench.gpu_inprocess import make_bert_base
from bench.timing import full_batch, median_wall_ms
from handler import layout
from handler.backends.cuda_graphs import CapturedBatch
from handler.backends.torch_cuda import build_cuda_model

SHAPES = [(1, 128), (32, 128), (128, 128)]


def replay_ms(captured: CapturedBatch, iterations: int = 50) -> float:
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


def padded_batch(batch: int, length: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random ids with lengths spread over 8..length (rows padded with zeros and mask 0)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (batch, length), generator=generator)
    lengths = torch.randint(8, length + 1, (batch,), generator=generator)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def without_triton(fused):
    """The same module (shared weights) with PyTorch's kernels instead of the Triton ones."""
    copy = copy_module.copy(fused)
    copy.triton_kernels = False
    return copy


def with_sdpa_backend(forward, backend_name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run(*args):
        with sdpa_kernel([getattr(SDPBackend, backend_name)]):
            return forward(*args)

    return run


def profile_fused(fused, out: Path) -> None:
    """Run the GPU tests (gpu_tests.txt), profile one eager 128x128 forward of the fused module with and
    without the Triton kernels (GPU-bound at this size; *_profile_128x128.txt), and time each encoder
    GEMM alone plus an 8192^3 product (gemm_rates.json)."""
    out.mkdir(parents=True, exist_ok=True)
    from torch.profiler import ProfilerActivity, profile

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-m", "gpu", str(REPO / "tests" / "handler")], capture_output=True, text=True)
    print("GPU tests:", tests.stdout.strip().splitlines()[-1], flush=True)
    (out / "gpu_tests.txt").write_text(tests.stdout)

    ids = torch.randint(1000, 20000, (128, 128), device="cuda")
    mask = torch.ones_like(ids, dtype=torch.bool)
    for name, module in (("fused_profile_128x128.txt", fused), ("fused_without_triton_profile_128x128.txt", without_triton(fused))):
        with torch.inference_mode():
            for _ in range(3):
                module(ids, torch.zeros_like(ids), mask)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                module(ids, torch.zeros_like(ids), mask)
                torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=90)
        print(table, flush=True)
        (out / name).write_text(table)
    tokens = 128 * 128
    gemm_rows = []
    for name, (n, k) in {"qkv": (2304, 768), "out": (768, 768), "up": (3072, 768), "down": (768, 3072)}.items():
        a = torch.randn(tokens, k, device="cuda", dtype=torch.float16)
        w = torch.randn(n, k, device="cuda", dtype=torch.float16)
        bias = torch.randn(n, device="cuda", dtype=torch.float16)
        for label, fn in {"addmm": lambda: torch.addmm(bias, a, w.t()), "mm": lambda: a @ w.t(),
                          "addmm_gelu": lambda: torch._addmm_activation(bias, a, w.t(), use_gelu=True)}.items():  # fmt: skip
            ms = _event_ms(fn)
            gemm_rows.append({"gemm": name, "tokens": tokens, "n": n, "k": k, "op": label, "ms": round(ms, 4), "tflops": round(2 * tokens * n * k / ms / 1e9, 1)})
            print(json.dumps(gemm_rows[-1]), flush=True)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    ms = _event_ms(lambda: a @ a, iterations=20)
    gemm_rows.append({"gemm": "square_8192", "tokens": 8192, "n": 8192, "k": 8192, "op": "mm", "ms": round(ms, 4), "tflops": round(2 * 8192**3 / ms / 1e9, 1)})
    print(json.dumps(gemm_rows[-1]), flush=True)
    (out / "gemm_rates.json").write_text(json.dumps(gemm_rows, indent=1))


def _event_ms(fn, iterations: int = 30) -> float:
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iterations


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_results")))
    parser.add_argument("--compile", action="store_true", help="also the torch.compile variants (10-20 s per shape)")
    parser.add_argument("--profile", action="store_true", help="print the fused module's kernel times at 128x128 and GEMM rates")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    model_dir = make_bert_base(Path("/tmp/probe_bert_base"), REPO / ".carry" / "default_model_dir" / layout.CHECKPOINT_DIR)
    hf_fused_off = build_cuda_model(model_dir, torch.device("cuda", 0), torch.float16, fused=False).forward
    fused = build_cuda_model(model_dir, torch.device("cuda", 0), torch.float16, fused=True).forward
    if args.profile:
        profile_fused(fused, args.out)
    # name: (forward function, captured with the attention mask?)
    variants = {
        "hf_module": lambda: (hf_fused_off, True),
        "fused": lambda: (fused, True),
        "fused_unpadded_graph": lambda: (fused, False),  # what the backend runs for batches without padding
        "fused_without_triton": lambda: (without_triton(fused), True),
        "fused_mem_efficient_attention": lambda: (with_sdpa_backend(fused, "EFFICIENT_ATTENTION"), True),
    }
    if args.compile:
        variants["hf_module_compile"] = lambda: (torch.compile(hf_fused_off, dynamic=False), True)
        variants["fused_compile"] = lambda: (torch.compile(fused, dynamic=False), True)

    from transformers import AutoModelForSequenceClassification

    torch.backends.cuda.matmul.allow_tf32 = False
    reference_model = AutoModelForSequenceClassification.from_pretrained(model_dir / layout.CHECKPOINT_DIR, attn_implementation="sdpa").eval().cuda()
    check = padded_batch(32, 128)
    with torch.inference_mode():
        reference = torch.softmax(reference_model(**{k: v.cuda() for k, v in check.items()}).logits.float(), -1).cpu()
    del reference_model

    rows, keep_alive = [], []  # graphs share one memory pool: freeing one mid-run breaks the next capture
    pool = torch.cuda.graph_pool_handle()
    for name, make in variants.items():
        torch._dynamo.reset()
        forward, masked = make()
        for batch, length in SHAPES:
            start = time.perf_counter()
            try:
                captured = CapturedBatch(forward, (batch, length), torch.device("cuda"), pool, masked)
            except Exception as error:  # a failed variant is a result too
                rows.append({"variant": name, "batch": batch, "seq": length, "error": repr(error)[:300]})
                print(json.dumps(rows[-1]), flush=True)
                continue
            row = {"variant": name, "batch": batch, "seq": length, "build_s": round(time.perf_counter() - start, 1)}
            if (batch, length) == (32, 128) and masked:
                probabilities = torch.softmax(captured.run({k: v.numpy() for k, v in check.items()}, batch, length), -1)
                row["max_abs_prob_diff"] = round(float((probabilities - reference).abs().max()), 5)
                row["argmax_agreement"] = float((probabilities.argmax(-1) == reference.argmax(-1)).float().mean())
            replay = replay_ms(captured)
            inputs = full_batch(batch, length)
            full = median_wall_ms(lambda: captured.run(inputs, batch, length), iterations=200)
            row |= {"replay_ms": round(replay, 3), "call_ms": round(full, 3), "seq_per_s_call": round(batch / full * 1000, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            keep_alive.append(captured)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_kernel_probe.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
