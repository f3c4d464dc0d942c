"""Checkpoint -> ONNX (input_ids, attention_mask, token_type_ids -> logits), checked with ONNX Runtime.

    python -m export.onnx_export --checkpoint DIR --out-dir DIR [--texts dev.csv] [--text-pair]

Writes ``model.onnx`` and ``serving_spec.json`` (names in handler/layout.py) into --out-dir, then
runs the ONNX model in ONNX Runtime and PyTorch on real texts of mixed lengths in padded batches and
reports the max |logit difference| and argmax agreement; over the tolerance it raises `ParityError`
(exit 1 from the command line).

A pair model (config.json's text_pair, or --text-pair) is checked on pairs tokenized as pairs (the
--texts CSV's ``txt_pair`` column); where the family has token types, the check fails unless segment B's
type 1 is in every batch it feeds. A regression model (one output) is checked on its raw score alone.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handler import layout
from handler.errors import DataError, ExportError, ParityError, run_cli
from export.quantize import add_arguments as add_quantization_arguments
from export.quantize import quantize_from_args
from handler.spec import ModelSpec
from training.data import PAIR_COLUMN, read_labelled_examples

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
#: (text, text_pair) of mixed lengths for pair models, when no CSV with pairs is given
FALLBACK_PAIRS = [
    ("A man is playing a guitar.", "Someone plays an instrument."),
    ("ok", "The delivery was late, the box was damaged and the support line kept me on hold for an hour before hanging up."),
    ("How do I reset my password?", "no"),
    ("The cat sat on the mat.", "The cat sat on the mat."),
    (FALLBACK_TEXTS[4], FALLBACK_TEXTS[5]),
    ("Is the battery replaceable?", "The battery lasts for days, but it is glued in and cannot be swapped."),
]


@dataclass
class ParityReport:
    """How closely ONNX Runtime reproduces PyTorch on real padded batches."""

    texts: int
    batches: int
    max_abs_logit_diff: float
    #: None for a regression model (one raw score: no label to agree on)
    argmax_agreement: float | None
    mismatches: list[str]
    #: True when the inputs were (text, text_pair) pairs
    text_pair: bool = False
    #: pair models of families with token types: how many fed tokens had token type 1 (segment B); else None
    type_one_tokens: int | None = None

    def summary(self) -> str:
        inputs = "text pairs" if self.text_pair else "texts"
        types = f", {self.type_one_tokens} tokens of token type 1" if self.type_one_tokens is not None else ""
        if self.argmax_agreement is None:
            return f"parity on {self.texts} {inputs} in {self.batches} padded batches{types}: max |Δscore| = {self.max_abs_logit_diff:.2e}"
        return (
            f"parity on {self.texts} {inputs} in {self.batches} padded batches{types}: "
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


def onnx_from_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, max_length: int | None = None, text_pair: bool | None = None
) -> tuple[Path, ModelSpec]:
    """Export the checkpoint to out_dir/model.onnx (dynamic batch and sequence) and write its spec
    (`text_pair` None: config.json's text_pair)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec.from_checkpoint(checkpoint, max_length, text_pair)
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


def parity_inputs(texts_csv: str | Path | None, text_pair: bool, count: int = 256, seed: int = 0) -> tuple[list[str], list[str] | None]:
    """(texts, second texts or None) for the parity check: a random sample of the CSV (so batches mix lengths),
    or a built-in mixed-length set when there is no CSV. A pair model needs the CSV's txt_pair column."""
    if texts_csv and Path(texts_csv).is_file():
        examples = read_labelled_examples(texts_csv)
        if text_pair and not examples.text_pair:
            raise DataError(
                f"{texts_csv} has no {PAIR_COLUMN} column, but the model reads text pairs: pass --texts a label,txt,{PAIR_COLUMN} CSV "
                "(the parity check runs on pairs)"
            )
        order = list(range(len(examples.texts)))
        random.Random(seed).shuffle(order)
        order = order[:count]
        return [examples.texts[i] for i in order], [examples.pairs[i] for i in order] if text_pair else None
    if text_pair:
        return [text for text, _ in FALLBACK_PAIRS] * 4, [pair for _, pair in FALLBACK_PAIRS] * 4
    return FALLBACK_TEXTS * 4, None


def texts_for_parity(texts_csv: str | Path | None, count: int = 256, seed: int = 0) -> list[str]:
    """Single texts for the parity check (see `parity_inputs`)."""
    return parity_inputs(texts_csv, False, count, seed)[0]


def check_onnx_parity(
    onnx_path: str | Path,
    checkpoint: str | Path,
    texts: list[str],
    batch_size: int = 16,
    tolerance: float = FP32_LOGIT_TOLERANCE,
    pairs: list[str] | None = None,
) -> ParityReport:
    """Compare ONNX Runtime with PyTorch fp32 on padded batches of `texts` (a pair model: of the pairs
    (texts[i], pairs[i])); raise `ParityError` over tolerance, on a differing argmax (classifiers), or when a
    pair model's batch feeds no token type 1 (families with token types)."""
    import onnxruntime as ort

    spec = ModelSpec.load(Path(onnx_path).parent)
    if spec.text_pair != (pairs is not None):
        wanted = "pairs: pass pairs= (the second texts; parity_inputs(csv, True) reads them)" if spec.text_pair else "single texts: pass no pairs"
        raise ExportError(f"{onnx_path} is a {'text-pair' if spec.text_pair else 'single-text'} model (its spec's text_pair): check it on {wanted}")
    checks_types = spec.text_pair and "token_type_ids" in spec.input_names
    model, tokenizer = load_checkpoint(checkpoint)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst, agree, mismatches, batches, type_one = 0.0, 0, [], 0, 0
    for first in range(0, len(texts), batch_size):
        chunk = texts[first : first + batch_size]
        chunk_pairs = pairs[first : first + batch_size] if pairs is not None else None
        encoded = tokenizer(
            chunk, chunk_pairs, padding=True, truncation=True, max_length=spec.max_length, return_tensors="pt", return_token_type_ids=True
        )  # fmt: skip
        if checks_types:
            batch_type_one = int((encoded["token_type_ids"] == 1).sum())
            if not batch_type_one:
                raise ParityError(
                    f"the pairs of batch {batches} were fed with no token type 1: the tokenizer of {checkpoint} does not mark the second "
                    "text as segment B, so the check would not exercise token_type_ids; give it a pair template with type id 1 "
                    "(tokenizer.json's post_processor, as BERT's has)"
                )
            type_one += batch_type_one
        with torch.inference_mode():
            reference = model(**{name: encoded[name] for name in spec.input_names}).logits.numpy()
        (candidate,) = session.run([spec.output_name], {name: encoded[name].numpy() for name in spec.input_names})
        batches += 1
        diff = np.abs(reference - candidate).max(axis=1)
        worst = max(worst, float(diff.max()))
        for row, (ref_row, cand_row) in enumerate(zip(reference, candidate)):
            size = f"{len(chunk[row])} + {len(chunk_pairs[row])} chars" if chunk_pairs else f"{len(chunk[row])} chars"
            if spec.regression:
                if diff[row] > tolerance:
                    mismatches.append(f"input {first + row} ({size}): score {ref_row[0]:.6g} vs {cand_row[0]:.6g}, |Δ|={diff[row]:.2e}")
                continue
            same_label = int(ref_row.argmax()) == int(cand_row.argmax())
            agree += same_label
            if diff[row] > tolerance or not same_label:
                mismatches.append(f"input {first + row} ({size}): |Δ|={diff[row]:.2e}, argmax {ref_row.argmax()} vs {cand_row.argmax()}")
    agreement = None if spec.regression else agree / len(texts)
    report = ParityReport(len(texts), batches, worst, agreement, mismatches, spec.text_pair, type_one if checks_types else None)
    if mismatches:
        listed = "\n  ".join(mismatches[:20])
        what = "over tolerance" if spec.regression else "over tolerance or argmax differs"
        raise ParityError(f"{report.summary()}; {what} ({tolerance:g}) in {len(mismatches)} inputs:\n  {listed}")
    return report


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/default/checkpoint"))
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts/default/export"))
    parser.add_argument("--max-length", type=int, help="longest sequence served (default 128, capped by the model's positions)")
    parser.add_argument(
        "--texts", type=Path, default=Path("artifacts/data/dev.csv"),
        help=f"label,txt CSV with texts for the parity check (label,txt,{PAIR_COLUMN} for a pair model)",
    )  # fmt: skip
    parser.add_argument(
        "--text-pair", action=argparse.BooleanOptionalAction, default=None,
        help="the model reads (text, text_pair) per input, written into the spec (default: config.json's text_pair)",
    )  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=FP32_LOGIT_TOLERANCE)
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (calibrated static int8, see export.quantize)")
    add_quantization_arguments(parser)
    return parser


def main() -> None:
    args = build_parser().parse_args()

    onnx_path, spec = onnx_from_checkpoint(args.checkpoint, args.out_dir, args.max_length, args.text_pair)
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 2**20:.1f} MiB) and {args.out_dir / layout.SPEC_FILE}")
    texts, pairs = parity_inputs(args.texts, spec.text_pair)
    report = check_onnx_parity(onnx_path, args.checkpoint, texts, tolerance=args.tolerance, pairs=pairs)
    print(report.summary())
    if args.int8:
        quantize_from_args(onnx_path, args.checkpoint, args)


if __name__ == "__main__":
    run_cli(main)
