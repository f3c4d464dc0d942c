"""Does packing (cuda_packing: the fused module's GEMMs on real tokens only, run eagerly) beat the padded
CUDA graph? BERT-base and BERT-large shapes, random weights, fp16, batches with half their tokens padding.

    PYTHONPATH=. python -m bench.gpu_packing --tokenizer .carry/default_model_dir/model --out results/

Writes gpu_packing.json: per shape and batch, the padded graph's call time, the packed call's, and the
largest probability difference between them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from bench.gpu_fp8 import packed_call
from bench.gpu_kernel_probe import padded_batch
from bench.gpu_torchserve import make_model
from bench.timing import median_wall_ms
from handler import layout
from handler.backends.cuda_graphs import CapturedBatch
from handler.backends.torch_cuda import build_cuda_model
from handler.spec import ModelSpec

CASES = [("bert-base", 128, 128), ("bert-base", 64, 512), ("bert-large", 128, 128), ("bert-large", 64, 512)]


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_results")))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    device, rows = torch.device("cuda", 0), []
    for shape, batch, length in CASES:
        model_dir = Path(f"/tmp/packing_{shape}")
        make_model(args.tokenizer, model_dir / layout.CHECKPOINT_DIR, shape, max_length=512)
        ModelSpec(id2label={0: "a", 1: "b", 2: "c"}, max_length=512).save(model_dir)
        model = build_cuda_model(model_dir, device, torch.float16)
        inputs = {key: value.numpy() for key, value in padded_batch(batch, length).items()}
        captured = CapturedBatch(model.forward, (batch, length), device, torch.cuda.graph_pool_handle(), masked=True)
        graph_ms = median_wall_ms(lambda: captured.run(inputs, batch, length), iterations=50, warmup=5)
        packed_ms = median_wall_ms(lambda: packed_call(model, inputs, device), iterations=50, warmup=5)
        difference = (torch.softmax(packed_call(model, inputs, device), -1) - torch.softmax(captured.run(inputs, batch, length), -1)).abs().max()
        rows.append({"shape": shape, "batch": batch, "seq": length, "real_token_share": round(float(inputs["attention_mask"].mean()), 3),
                     "graph_padded_ms": round(graph_ms, 3), "packed_eager_ms": round(packed_ms, 3), "speedup": round(graph_ms / packed_ms, 2),
                     "max_abs_prob_diff": float(difference)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_packing.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
