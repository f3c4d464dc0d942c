"""Accuracy of each truncation policy on the longest texts of a test split (docs/models-and-training.md ("Long texts")).

    python -m bench.truncation_policies --checkpoint artifacts/zh/checkpoint --export-dir artifacts/zh/export \\
        --test artifacts/zh/data/test.csv --max-length 128 64 --out bench/results/cpu_2core/

The longest 10% of the test texts (by token count) go through the handler's classifier (ONNX Runtime
fp32, in-process) under head, tail, head+tail and chunks; prints a table and writes truncation_policies.csv.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from handler.classifier import load_classifier
from handler.settings import TRUNCATION_POLICIES, HandlerSettings, OnnxRuntimeOptions
from harness.models import model_dir_like_mar
from training.data import read_labelled_csv


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/zh/checkpoint"))
    parser.add_argument("--export-dir", type=Path, default=Path("artifacts/zh/export"))
    parser.add_argument("--test", type=Path, default=Path("artifacts/zh/data/test.csv"))
    parser.add_argument("--max-length", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--share", type=float, default=0.1, help="the longest share of the test texts")
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    labels, texts = read_labelled_csv(args.test)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model_dir_like_mar(args.checkpoint, args.export_dir, Path(tmp) / "model")
        for max_length in args.max_length:
            for policy in TRUNCATION_POLICIES:
                settings = HandlerSettings(backend="onnxruntime", max_length=max_length, truncation=policy, onnxruntime=OnnxRuntimeOptions(int8=False))
                classifier, _ = load_classifier(model_dir, settings, gpu_id=None)
                if not rows or rows[-1]["max_length"] != max_length:
                    lengths = [text.tokens for text in classifier.tokenizer.encode_texts(texts, max_length, "head")]
                    longest = sorted(range(len(texts)), key=lambda i: -lengths[i])[: max(1, int(len(texts) * args.share))]
                answers = [answer for first in range(0, len(longest), 32) for answer in classifier.classify([texts[i] for i in longest[first : first + 32]])]
                accuracy = sum(answer["label"] == labels[i] for answer, i in zip(answers, longest)) / len(longest)
                rows.append({"max_length": max_length, "policy": policy, "texts": len(longest), "min_tokens": min(lengths[i] for i in longest),
                             "truncated_share": round(sum(a["truncated"] for a in answers) / len(answers), 3), "accuracy": round(accuracy, 4),
                             "windows_per_text": round(sum(a.get("chunks", 1) for a in answers) / len(answers), 2)})  # fmt: skip
                print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "truncation_policies.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
