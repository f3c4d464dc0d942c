"""Checkpoint -> ONNX (input_ids, attention_mask, token_type_ids -> logits), checked with ONNX Runtime.

    python -m export.onnx_export --checkpoint DIR --out-dir DIR [--texts dev.csv]

Writes ``model.onnx`` and ``serving_spec.json`` (names in handler/layout.py) into --out-dir, then
runs the ONNX model in ONNX Runtime and PyTorch on real texts of mixed lengths in padded batches and
reports the max |logit difference| and argmax agreement; over the tolerance it raises `ParityError`
(exit 1 from the command line).
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handler import layout
from handler.errors import ParityError, run_cli
from export.quantize import add_arguments as add_quantization_arguments
from export.quantize import quantize_from_args
from handler.spec import ModelSpec
from training.data import read_labelled_csv

FP32_LOGIT_TOLERANCE = 1e-4
#: the same check for the fp16 ONNX export.trt_engine writes (fp16 weights and matmuls, norms in fp32)
FP16_LOGIT_TOLERANCE = 5e-2
FALLBACK_TEXTS = [
    "I loved every minute of it.",
    "Terrible service, never again.",
    "The package arrived on Tuesday.",
    "ok",
    "This is, without doubt, the most thoughtful and well-made product I have bought in years; "
    "the battery lasts for days and support answered within an hour.",
    "Meh. It works, I guess, but the app keeps crashing when I open settings and nobody replies.",
]


@dataclass
class ParityReport:
    """How closely ONNX Runtime reproduces PyTorch on real padded batches."""

    texts: int
    batches: int
    max_abs_logit_diff: float
    argmax_agreement: float
    mismatches: list[str]

    def summary(self) -> str:
        return (
            f"parity on {self.texts} texts in {self.batches} padded batches: "
            f"max |Δlogit| = {self.max_abs_logit_diff:.2e}, argmax agreement = {self.argmax_agreement:.2%}"
        )


class _LogitsOnly(torch.nn.Module):
    """Positional inputs (named by `input_names`, the spec's) -> logits, for a clean ONNX signature."""

    def __init__(self, model, input_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs):
        return self.model(**dict(zip(self.input_names, inputs))).logits


def load_checkpoint(checkpoint: str | Path):
    """(model in eval mode, fast tokenizer) from a local checkpoint folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, local_files_only=True, dtype=torch.float32)
    return model.eval(), tokenizer


def onnx_from_checkpoint(checkpoint: str | Path, out_dir: str | Path, max_length: int | None = None) -> tuple[Path, ModelSpec]:
    """Export the checkpoint to out_dir/model.onnx (dynamic batch and sequence) and write its spec."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec.from_checkpoint(checkpoint, max_length)
    model, tokenizer = load_checkpoint(checkpoint)
    sample = tokenizer(FALLBACK_TEXTS[:2], padding=True, return_tensors="pt", return_token_type_ids=True)
    onnx_path = out_dir / layout.ONNX_FILE
    torch.onnx.export(
        _LogitsOnly(model, spec.input_names),
        tuple(sample[name] for name in spec.input_names),
        str(onnx_path),
        input_names=list(spec.input_names),
        output_names=[spec.output_name],
        dynamic_axes=spec.dynamic_axes,
        opset_version=spec.opset,
        dynamo=False,  # the TorchScript exporter gives plain dynamic axes that TensorRT's parser takes as is
    )
    spec.save(out_dir)
    return onnx_path, spec


def texts_for_parity(texts_csv: str | Path | None, count: int = 256, seed: int = 0) -> list[str]:
    """Real texts (a random sample, so batches mix lengths) or a built-in mixed-length set."""
    if texts_csv and Path(texts_csv).is_file():
        _, texts = read_labelled_csv(texts_csv)
        random.Random(seed).shuffle(texts)
        return texts[:count]
    return FALLBACK_TEXTS * 4


def check_onnx_parity(
    onnx_path: str | Path,
    checkpoint: str | Path,
    texts: list[str],
    batch_size: int = 16,
    tolerance: float = FP32_LOGIT_TOLERANCE,
) -> ParityReport:
    """Compare ONNX Runtime with PyTorch fp32 on padded batches; raise `ParityError` over tolerance."""
    import onnxruntime as ort

    spec = ModelSpec.load(Path(onnx_path).parent)
    model, tokenizer = load_checkpoint(checkpoint)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst, agree, mismatches, batches = 0.0, 0, [], 0
    for first in range(0, len(texts), batch_size):
        chunk = texts[first : first + batch_size]
        encoded = tokenizer(chunk, padding=True, truncation=True, max_length=spec.max_length, return_tensors="pt", return_token_type_ids=True)
        with torch.inference_mode():
            reference = model(**{name: encoded[name] for name in spec.input_names}).logits.numpy()
        (candidate,) = session.run([spec.output_name], {name: encoded[name].numpy() for name in spec.input_names})
        batches += 1
        diff = np.abs(reference - candidate).max(axis=1)
        worst = max(worst, float(diff.max()))
        for row, (ref_row, cand_row) in enumerate(zip(reference, candidate)):
            same_label = int(ref_row.argmax()) == int(cand_row.argmax())
            agree += same_label
            if diff[row] > tolerance or not same_label:
                mismatches.append(f"text {first + row} ({len(chunk[row])} chars): |Δ|={diff[row]:.2e}, argmax {ref_row.argmax()} vs {cand_row.argmax()}")
    report = ParityReport(len(texts), batches, worst, agree / len(texts), mismatches)
    if mismatches:
        listed = "\n  ".join(mismatches[:20])
        raise ParityError(f"{report.summary()}; over tolerance {tolerance:g} or argmax differs in {len(mismatches)} texts:\n  {listed}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/default/checkpoint"))
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts/default/export"))
    parser.add_argument("--max-length", type=int, help="longest sequence served (default 128, capped by the model's positions)")
    parser.add_argument("--texts", type=Path, default=Path("artifacts/data/dev.csv"), help="label,txt CSV with texts for the parity check")
    parser.add_argument("--tolerance", type=float, default=FP32_LOGIT_TOLERANCE)
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (calibrated static int8, see export.quantize)")
    add_quantization_arguments(parser)
    args = parser.parse_args()

    onnx_path, spec = onnx_from_checkpoint(args.checkpoint, args.out_dir, args.max_length)
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 2**20:.1f} MiB) and {args.out_dir / layout.SPEC_FILE}")
    report = check_onnx_parity(onnx_path, args.checkpoint, texts_for_parity(args.texts), tolerance=args.tolerance)
    print(report.summary())
    if args.int8:
        quantize_from_args(onnx_path, args.checkpoint, args)


if __name__ == "__main__":
    run_cli(main)
