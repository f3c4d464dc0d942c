"""fp32 ONNX -> calibrated (static) int8 ONNX with ONNX Runtime's quantizer, checked against an accuracy budget.

    python -m export.quantize --checkpoint DIR --onnx DIR/model.onnx --calibration train.csv --evaluation test.csv

Why static: a static model's activation scales are fixed by calibration, so a text's answer never depends
on the other texts of its batch (the dynamic quantizer computed them per forward pass and moved a text's
probabilities by up to 0.09 with its neighbours). The graph is QDQ (QuantizeLinear / DequantizeLinear around
each quantized MatMul), the format TensorRT's explicit quantization also reads. Weights are int8 per output
channel, activations uint8 per tensor (MinMax over the calibration texts). Only the MatMuls with a weight
are quantized: the 6 projections of each layer; attention's two activation x activation MatMuls stay fp32
(quantizing them too cost 0.29 more accuracy points on the default model and ran slower).

The int8 model's accuracy is measured on labelled texts against the fp32 ONNX; above the budget (default
0.5 points) the file is removed and `QuantizationBudgetError` is raised (exit 1). The record of how it was
made goes into serving_spec.json (`ModelSpec.quantization`), so the archive says how its model was made.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from handler import layout
from handler.errors import DataError, ExportError, run_cli
from handler.spec import ModelSpec, QuantizationRecord
from training.data import read_labelled_csv

DEFAULT_BUDGET_POINTS = 0.5
DEFAULT_CALIBRATION_TEXTS = 300
METHOD = "static int8 (QDQ)"


class QuantizationBudgetError(ExportError):
    """The int8 model loses more accuracy than the budget allows."""


def weight_matmuls(onnx_path: Path) -> list[str]:
    """Names of the MatMul nodes with an initializer (a weight) among their inputs."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    weights = {initializer.name for initializer in model.graph.initializer}
    return [node.name for node in model.graph.node if node.op_type == "MatMul" and any(name in weights for name in node.input)]


class _TokenizedBatches:
    """ONNX Runtime's CalibrationDataReader over texts tokenized in padded batches."""

    def __init__(self, tokenizer, spec: ModelSpec, texts: list[str], batch_size: int = 16):
        self.batches = [onnx_feeds(tokenizer, spec, texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]

    def get_next(self):
        return self.batches.pop(0) if self.batches else None


def onnx_feeds(tokenizer, spec: ModelSpec, texts: list[str]) -> dict[str, np.ndarray]:
    """int64 inputs of a padded batch, named as the ONNX graph's inputs."""
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=spec.max_length, return_tensors="np", return_token_type_ids=True)
    return {name: encoded[name].astype(np.int64) for name in spec.input_names}


def onnx_accuracy(onnx_path: Path, tokenizer, spec: ModelSpec, labels: list[str], texts: list[str], batch_size: int = 16) -> float:
    """Share of texts whose argmax label (spec's names) equals `labels`, batched by length."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    correct = 0
    for first in range(0, len(order), batch_size):
        indices = order[first : first + batch_size]
        (logits,) = session.run([spec.output_name], onnx_feeds(tokenizer, spec, [texts[i] for i in indices]))
        correct += sum(spec.labels[int(best)] == labels[i] for best, i in zip(logits.argmax(1), indices))
    return correct / len(texts)


def static_int8_from_onnx(
    onnx_path: Path,
    checkpoint: Path,
    calibration_csv: Path,
    evaluation_csv: Path,
    calibration_texts: int = DEFAULT_CALIBRATION_TEXTS,
    budget_points: float = DEFAULT_BUDGET_POINTS,
    seed: int = 0,
) -> QuantizationRecord:
    """Write model.int8.onnx beside `onnx_path`, check it against the budget, and record it in the spec there.

    Raises `QuantizationBudgetError` (and removes the file) when it loses more than `budget_points`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from transformers import AutoTokenizer

    spec = ModelSpec.load(onnx_path.parent)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    _, pool = read_labelled_csv(calibration_csv)
    random.Random(seed).shuffle(pool)
    calibration = pool[:calibration_texts]
    evaluation_labels, evaluation_texts = read_labelled_csv(evaluation_csv)
    unknown = set(evaluation_labels) - set(spec.labels)
    if unknown:
        raise DataError(f"{evaluation_csv} has labels {sorted(unknown)} that the model does not know ({spec.labels})")

    int8_path = onnx_path.with_name(layout.INT8_ONNX_FILE)
    with tempfile.TemporaryDirectory(prefix="bert_trt_int8_") as tmp:  # the shape-inferred copy is scratch
        prepared = Path(tmp) / layout.ONNX_FILE
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(int8_path), _TokenizedBatches(tokenizer, spec, calibration),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"], nodes_to_quantize=weight_matmuls(prepared), calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
    record = QuantizationRecord(
        method=METHOD, per_channel=True, calibrate_method="MinMax", calibration_source=Path(calibration_csv).name,
        calibration_texts=len(calibration), seed=seed, quantized_ops="weights", evaluation_source=Path(evaluation_csv).name,
        evaluation_texts=len(evaluation_texts), budget_points=budget_points,
        accuracy_fp32=round(onnx_accuracy(onnx_path, tokenizer, spec, evaluation_labels, evaluation_texts), 4),
        accuracy_int8=round(onnx_accuracy(int8_path, tokenizer, spec, evaluation_labels, evaluation_texts), 4),
    )  # fmt: skip
    if record.loss_points > budget_points:
        int8_path.unlink()
        raise QuantizationBudgetError(
            f"int8 loses {record.loss_points} accuracy points on {record.evaluation_texts} texts of {record.evaluation_source} "
            f"({record.accuracy_int8} vs fp32 {record.accuracy_fp32}), over the budget of {budget_points}: serve fp32 "
            f"(build_mar.py --no-onnx-int8), calibrate on more texts (--calibration-texts), or raise --budget-points"
        )
    replace(spec, quantization=record).save(onnx_path.parent)
    return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The quantization options, shared by this command and `export.onnx_export --int8`."""
    parser.add_argument("--calibration", type=Path, default=Path("artifacts/data/train.csv"), help="label,txt CSV to sample calibration texts from")
    parser.add_argument("--calibration-texts", type=int, default=DEFAULT_CALIBRATION_TEXTS)
    parser.add_argument("--evaluation", type=Path, default=Path("artifacts/data/test.csv"), help="label,txt CSV the accuracy budget is checked on")
    parser.add_argument("--budget-points", type=float, default=DEFAULT_BUDGET_POINTS, help="largest accuracy loss accepted, in points")


def quantize_from_args(onnx_path: Path, checkpoint: Path, args: argparse.Namespace) -> QuantizationRecord:
    """Run `static_int8_from_onnx` with the options of `add_arguments` and print what it did."""
    for option, path in (("--calibration", args.calibration), ("--evaluation", args.evaluation)):
        if not Path(path).is_file():
            raise DataError(f"{path} does not exist: int8 needs labelled texts, pass {option} CSV (label,txt)")
    record = static_int8_from_onnx(onnx_path, checkpoint, args.calibration, args.evaluation, args.calibration_texts, args.budget_points)
    print(
        f"wrote {onnx_path.with_name(layout.INT8_ONNX_FILE)} ({record.method}, {record.calibration_texts} calibration texts): accuracy "
        f"{record.accuracy_int8} vs fp32 {record.accuracy_fp32} on {record.evaluation_texts} texts ({record.loss_points} points lost, budget {record.budget_points})"
    )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/default/checkpoint"))
    parser.add_argument("--onnx", type=Path, default=Path("artifacts/default/export") / layout.ONNX_FILE)
    add_arguments(parser)
    args = parser.parse_args()
    quantize_from_args(args.onnx, args.checkpoint, args)


if __name__ == "__main__":
    run_cli(main)
