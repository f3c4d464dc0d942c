"""fp32 ONNX -> calibrated (static) quantized models, each checked against an accuracy budget.

    python -m export.quantize --checkpoint DIR --onnx DIR/model.onnx --calibration train.csv --evaluation test.csv
    python -m export.quantize ... --write tensorrt-int8 tensorrt-fp8 torch-fp8

By default (`--write onnxruntime-int8`) it writes model.int8.onnx for the onnxruntime backend (below).
`--write tensorrt-int8` / `tensorrt-fp8` write TensorRT's explicit-quantization graphs instead
(model.qdq-int8.onnx, model.qdq-fp8.onnx: symmetric scales, zero points 0, int8 or float8 e4m3 Q/DQ around
the same weight MatMuls, opset 19 for FP8), which `export.trt_engine --precision int8|fp8` builds from;
their records sit beside them as JSON. `--write torch-fp8` writes fp8_scales.json: each projection input's
absmax for the torch_cuda backend's FP8 path
(handler/kernels/fp8_bert.py), from the same calibration texts, with its accuracy (emulated on the CPU)
checked against the same budget.

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

Pair models (the spec's text_pair) calibrate and are evaluated on pairs: the CSVs need a third column,
``txt_pair``, and each row is tokenized as (txt, txt_pair). Regression models (one output) are measured by
the Pearson correlation of their scores with the CSV's float labels instead of accuracy; the budget is then
in points of 100 x r, and the record's metric says "pearson".
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from handler import layout
from handler.errors import DataError, ExportError, run_cli
from handler.spec import ModelSpec, QuantizationRecord
from training import metrics
from training.data import PAIR_COLUMN, LabelledExamples, float_labels, read_labelled_examples

DEFAULT_BUDGET_POINTS = 0.5
DEFAULT_CALIBRATION_TEXTS = 300
#: QuantizationRecord.metric of classifiers (share of argmax labels right) and of regression models
ACCURACY, PEARSON = "accuracy", "pearson"


@dataclass(frozen=True)
class QdqFormat:
    """One quantized ONNX the exporter can write: its file, reader and ONNX Runtime quantizer options."""

    file_name: str
    method: str
    #: onnxruntime.quantization.QuantType names
    activation_type: str
    weight_type: str
    activation_symmetric: bool
    #: onnxruntime.quantization.CalibrationMethod name (its float8 quantizer accepts Distribution only)
    calibrate_method: str
    #: weight MatMuls left in float: None, or "ffn_down" (each layer's FFN down projection, see FFN_DOWN_MATMUL)
    kept_in_float: str | None = None

    @property
    def quantized_ops(self) -> str:
        """What the record says was quantized."""
        return "weights except the FFN down projection" if self.kept_in_float == "ffn_down" else "weights"

    def matmuls_to_quantize(self, onnx_path: Path) -> list[str]:
        """The weight MatMuls this format quantizes."""
        names = weight_matmuls(onnx_path)
        return [name for name in names if not FFN_DOWN_MATMUL.search(name)] if self.kept_in_float == "ffn_down" else names


#: the FFN's down projection in exported encoders (BERT/RoBERTa/ELECTRA/DeBERTa: layer.N/output/dense; DistilBERT: ffn/lin2).
#: Its input is GELU's output, whose outliers a symmetric per-tensor int8 scale cannot hold: quantizing it cost the
#: default model 3.6 accuracy points with TensorRT-style int8, keeping it in float 0.1 (README)
FFN_DOWN_MATMUL = re.compile(r"(?<!attention)/output/dense/MatMul$|/ffn/lin2/MatMul$")


ONNXRUNTIME_INT8 = QdqFormat(layout.INT8_ONNX_FILE, "static int8 (QDQ)", "QUInt8", "QInt8", False, "MinMax")
#: TensorRT reads symmetric Q/DQ only (zero point 0), int8 or float8 e4m3
TENSORRT_FORMATS = {
    "int8": QdqFormat(layout.QDQ_ONNX_FILES["int8"], "static int8 (QDQ, symmetric)", "QInt8", "QInt8", True, "MinMax", kept_in_float="ffn_down"),
    "fp8": QdqFormat(layout.QDQ_ONNX_FILES["fp8"], "static fp8 e4m3 (QDQ)", "QFLOAT8E4M3FN", "QFLOAT8E4M3FN", True, "Distribution"),
}
FP8_SCALES_METHOD = "static fp8 e4m3 (torch_cuda, per-tensor scales)"


class QuantizationBudgetError(ExportError):
    """The int8 model loses more accuracy than the budget allows."""


def weight_matmuls(onnx_path: Path) -> list[str]:
    """Names of the MatMul nodes with an initializer (a weight) among their inputs."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    weights = {initializer.name for initializer in model.graph.initializer}
    return [node.name for node in model.graph.node if node.op_type == "MatMul" and any(name in weights for name in node.input)]


class TokenizedBatches:
    """ONNX Runtime's CalibrationDataReader over texts (or pairs: `pairs` holds the second texts) tokenized in
    batches, padded to the batch's longest input; or, with `pad_to`, full batches only, each padded to `pad_to`
    tokens (the histogram calibrators stack every batch's tensors: they need one shape). `texts_used` says how
    many inputs it feeds."""

    def __init__(self, tokenizer, spec: ModelSpec, texts: list[str], batch_size: int = 16, pad_to: int | None = None, pairs: list[str] | None = None):
        if pad_to:
            texts = texts[: len(texts) - len(texts) % batch_size] or texts
        self.texts_used = len(texts)
        self.batches = [
            onnx_feeds(tokenizer, spec, texts[i : i + batch_size], pad_to, pairs[i : i + batch_size] if pairs else None)
            for i in range(0, len(texts), batch_size)
        ]

    def get_next(self):
        return self.batches.pop(0) if self.batches else None


def onnx_feeds(tokenizer, spec: ModelSpec, texts: list[str], pad_to: int | None = None, pairs: list[str] | None = None) -> dict[str, np.ndarray]:
    """int64 inputs of a padded batch (to its longest input, or to `pad_to` tokens), named as the ONNX graph's
    inputs; with `pairs`, each input is the pair (texts[i], pairs[i]), cut longest-first to fit."""
    padding = {"padding": "max_length", "max_length": pad_to} if pad_to else {"padding": True, "max_length": spec.max_length}
    encoded = tokenizer(texts, pairs, truncation=True, return_tensors="np", return_token_type_ids=True, **padding)
    return {name: encoded[name].astype(np.int64) for name in spec.input_names}


def length_order(texts: list[str], pairs: list[str] | None = None) -> list[int]:
    """Indices of the inputs, shortest first (batches of similar lengths pad little)."""
    return sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs else 0))


def onnx_outputs(onnx_path: Path, tokenizer, spec: ModelSpec, texts: list[str], pairs: list[str] | None = None, batch_size: int = 16, fuse: bool = True) -> np.ndarray:
    """The ONNX model's outputs (logits, or a regression model's scores) for each input, in input order,
    run in length-sorted batches. `fuse=False` turns ONNX Runtime's graph fusions off: Q/DQ then run as
    written, around float32 MatMuls (how its CPU runs FP8 QDQ graphs: it has no FP8 MatMul, and the fused
    QLinearMatMul refuses float8 inputs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not fuse:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    order = length_order(texts, pairs)
    outputs = np.zeros((len(texts), len(spec.labels)), dtype=np.float32)
    for first in range(0, len(order), batch_size):
        indices = order[first : first + batch_size]
        feeds = onnx_feeds(tokenizer, spec, [texts[i] for i in indices], pairs=[pairs[i] for i in indices] if pairs else None)
        (batch_outputs,) = session.run([spec.output_name], feeds)
        outputs[indices] = batch_outputs
    return outputs


def pearson(predicted: np.ndarray, gold: np.ndarray) -> float:
    """Pearson correlation of two score vectors; 0.0 when the predictions are constant (nothing correlates)."""
    correlation = metrics.pearson(predicted, gold)
    return 0.0 if math.isnan(correlation) else correlation


def quality(spec: ModelSpec, outputs: np.ndarray, labels: list) -> float:
    """What the budget is measured in: a regression model's Pearson correlation of its scores with the float
    `labels`, else the share of inputs whose argmax label (spec's names) equals `labels`."""
    if spec.regression:
        return pearson(outputs[:, 0], np.asarray(labels, dtype=np.float64))
    return sum(spec.labels[int(best)] == label for best, label in zip(outputs.argmax(1), labels)) / len(labels)


def onnx_accuracy(
    onnx_path: Path, tokenizer, spec: ModelSpec, labels: list, texts: list[str], batch_size: int = 16, fuse: bool = True, pairs: list[str] | None = None
) -> float:
    """`quality` of the ONNX model on `texts` (and `pairs`) against `labels` (see `onnx_outputs` for `fuse`)."""
    return quality(spec, onnx_outputs(onnx_path, tokenizer, spec, texts, pairs, batch_size, fuse), labels)


def examples_for(spec: ModelSpec, path: Path, option: str) -> LabelledExamples:
    """The CSV at `path` (given as `option`), checked to hold pairs exactly when the model reads pairs."""
    examples = read_labelled_examples(path)
    if spec.text_pair and not examples.text_pair:
        raise DataError(
            f"{path} has no {PAIR_COLUMN} column, but the model reads text pairs: pass {option} a label,txt,{PAIR_COLUMN} CSV "
            f"(each row's second text in {PAIR_COLUMN})"
        )
    if examples.text_pair and not spec.text_pair:
        raise DataError(
            f"{path} has a {PAIR_COLUMN} column, but the model reads single texts (its spec's text_pair is false): pass {option} "
            f"a label,txt CSV, or re-export with `export.onnx_export --text-pair` if the model reads pairs"
        )
    return examples


@dataclass
class CalibrationData:
    """What every quantization here reads: the tokenizer, the spec, calibration texts and labelled evaluation
    texts (for pair models also their second texts; for regression models float labels)."""

    tokenizer: object
    spec: ModelSpec
    calibration: list[str]
    calibration_source: str
    seed: int
    #: label names, or a regression model's float scores
    evaluation_labels: list
    evaluation_texts: list[str]
    evaluation_source: str
    #: `quality` (accuracy, or Pearson r) of each fp32 ONNX on the evaluation texts (every quantized output is compared with it)
    fp32_accuracies: dict[Path, float] = field(default_factory=dict)
    #: pair models: the second text of each calibration / evaluation text (None: single texts)
    calibration_pairs: list[str] | None = None
    evaluation_pairs: list[str] | None = None

    @property
    def metric(self) -> str:
        """What the budget is measured in (QuantizationRecord.metric): "pearson" for regression, else "accuracy"."""
        return PEARSON if self.spec.regression else ACCURACY

    def calibration_batches(self, pad_to: int | None = None) -> TokenizedBatches:
        """The calibration texts (or pairs) as ONNX Runtime's calibration reader (see `TokenizedBatches`)."""
        return TokenizedBatches(self.tokenizer, self.spec, self.calibration, pad_to=pad_to, pairs=self.calibration_pairs)

    def fp32_accuracy(self, onnx_path: Path) -> float:
        """The fp32 ONNX's `quality` on the evaluation texts, measured once."""
        if onnx_path not in self.fp32_accuracies:
            self.fp32_accuracies[onnx_path] = self.onnx_quality(onnx_path)
        return self.fp32_accuracies[onnx_path]

    def onnx_quality(self, onnx_path: Path, fuse: bool = True) -> float:
        """`quality` of an ONNX model on the evaluation texts (or pairs)."""
        return onnx_accuracy(onnx_path, self.tokenizer, self.spec, self.evaluation_labels, self.evaluation_texts, fuse=fuse, pairs=self.evaluation_pairs)

    @classmethod
    def load(cls, export_dir: Path, checkpoint: Path, calibration_csv: Path, evaluation_csv: Path, calibration_texts: int, seed: int = 0) -> "CalibrationData":
        """Sample `calibration_texts` texts (or pairs; shuffled with `seed`) and read the evaluation CSV; raises
        `DataError` on unknown labels (regression: labels that are not numbers, or all equal) and when a CSV's
        pairs do not match the model's."""
        from transformers import AutoTokenizer

        spec = ModelSpec.load(export_dir)
        pool = examples_for(spec, calibration_csv, "--calibration")
        order = list(range(len(pool.texts)))
        random.Random(seed).shuffle(order)
        order = order[:calibration_texts]
        evaluation = examples_for(spec, evaluation_csv, "--evaluation")
        labels = evaluation_labels(spec, evaluation)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
        return cls(
            tokenizer, spec, [pool.texts[i] for i in order], Path(calibration_csv).name, seed, labels, evaluation.texts, Path(evaluation_csv).name,
            calibration_pairs=[pool.pairs[i] for i in order] if pool.text_pair else None, evaluation_pairs=evaluation.pairs,
        )  # fmt: skip

    def record(
        self, method: str, calibrate_method: str, budget_points: float, accuracy_fp32: float, accuracy_quantized: float,
        calibration_texts: int | None = None, quantized_ops: str = "weights",
    ) -> QuantizationRecord:  # fmt: skip
        """The record of a model quantized from this data (`calibration_texts` of its texts, default all; the
        two scores in `metric`), refused (`QuantizationBudgetError`) over the budget."""
        record = QuantizationRecord(
            method=method, per_channel=True, calibrate_method=calibrate_method, calibration_source=self.calibration_source,
            calibration_texts=calibration_texts or len(self.calibration), seed=self.seed, quantized_ops=quantized_ops, evaluation_source=self.evaluation_source,
            evaluation_texts=len(self.evaluation_texts), budget_points=budget_points,
            accuracy_fp32=round(accuracy_fp32, 4), accuracy_quantized=round(accuracy_quantized, 4), metric=self.metric,
        )  # fmt: skip
        if record.loss_points > budget_points:
            points = "correlation points (100 x Pearson r with the gold scores)" if record.metric == PEARSON else "accuracy points"
            raise QuantizationBudgetError(
                f"{method} loses {record.loss_points} {points} on {record.evaluation_texts} texts of {record.evaluation_source} "
                f"({record.accuracy_quantized} vs fp32 {record.accuracy_fp32}), over the budget of {budget_points}: serve without it, "
                f"calibrate on more texts (--calibration-texts), or raise --budget-points"
            )
        return record


def evaluation_labels(spec: ModelSpec, examples: LabelledExamples) -> list:
    """The evaluation labels as the model's metric needs them: float scores (regression) or known label names."""
    if spec.regression:
        scores = float_labels(examples)
        if len(set(scores)) < 2:
            raise DataError(f"{examples.path}: every label is {scores[0]}: a correlation needs varied gold scores; evaluate on a CSV with different scores")
        return scores
    unknown = set(examples.labels) - set(spec.labels)
    if unknown:
        raise DataError(f"{examples.path} has labels {sorted(unknown)} that the model does not know ({spec.labels})")
    return examples.labels


def write_qdq_onnx(onnx_path: Path, qdq: QdqFormat, data: CalibrationData, budget_points: float) -> QuantizationRecord:
    """Write `qdq.file_name` beside `onnx_path` with ONNX Runtime's static quantizer and check it (ONNX Runtime,
    CPU) against the fp32 ONNX; over the budget the file is removed and `QuantizationBudgetError` raised."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = onnx_path.with_name(qdq.file_name)
    reader = data.calibration_batches(pad_to=None if qdq.calibrate_method == "MinMax" else data.spec.max_length)
    with tempfile.TemporaryDirectory(prefix="bert_trt_qdq_") as tmp:  # the shape-inferred copy is scratch
        prepared = Path(tmp) / layout.ONNX_FILE
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out), reader,
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType[qdq.activation_type],
            weight_type=QuantType[qdq.weight_type], op_types_to_quantize=["MatMul"], nodes_to_quantize=qdq.matmuls_to_quantize(prepared),
            calibrate_method=CalibrationMethod[qdq.calibrate_method],
            extra_options={"ActivationSymmetric": qdq.activation_symmetric, "WeightSymmetric": True},
        )  # fmt: skip
    if "FLOAT8" in qdq.activation_type:
        absmax_fp8_scales(out, onnx_path, data)
    accuracy = data.onnx_quality(out, fuse="FLOAT8" not in qdq.activation_type)
    try:
        return data.record(
            qdq.method, qdq.calibrate_method, budget_points, data.fp32_accuracy(onnx_path), accuracy,
            calibration_texts=reader.texts_used, quantized_ops=qdq.quantized_ops,
        )  # fmt: skip
    except QuantizationBudgetError:
        out.unlink()
        raise


def absmax_fp8_scales(qdq_path: Path, fp32_path: Path, data: CalibrationData) -> None:
    """Give the FP8 QDQ graph at `qdq_path` absmax scales: each quantized activation's largest |value| over
    the calibration texts (ONNX Runtime's MinMax calibrator on the fp32 graph) / 448, and each weight
    column's (per output channel) / 448, its FP8 weights rounded again from the fp32 ones. ONNX Runtime's
    quantizer only offers its Distribution method for FP8, whose scales cost the default model 6.6
    accuracy points; absmax keeps it within 0.1 (README)."""
    import onnx
    import torch
    from onnx import numpy_helper
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from handler.kernels.triton_kernels import FP8_E4M3_MAX, quantize_fp8_reference

    model = onnx.load(str(qdq_path))
    initializers = {i.name: i for i in model.graph.initializer}
    activation_scales = {n.input[0]: n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in initializers}
    with tempfile.TemporaryDirectory(prefix="bert_trt_fp8_") as tmp:
        calibrator = create_calibrator(str(fp32_path), None, augmented_model_path=str(Path(tmp) / "augmented.onnx"), calibrate_method=CalibrationMethod.MinMax)
        calibrator.collect_data(data.calibration_batches())
        ranges = calibrator.compute_data()
    for tensor, scale_name in activation_scales.items():
        low, high = getattr(ranges[tensor], "range_value", ranges[tensor])
        absmax = max(float(np.abs(low).max()), float(np.abs(high).max()), 1e-12)
        initializers[scale_name].CopyFrom(numpy_helper.from_array(np.array(absmax / FP8_E4M3_MAX, dtype=np.float32), scale_name))
    fp32_weights = {i.name: i for i in onnx.load(str(fp32_path)).graph.initializer}
    for node in model.graph.node:
        name = node.input[0]
        if node.op_type == "DequantizeLinear" and name in initializers and name.removesuffix("_quantized") in fp32_weights:
            weight = numpy_helper.to_array(fp32_weights[name.removesuffix("_quantized")]).astype(np.float32)  # [in, out]: scales per column
            scale = (np.maximum(np.abs(weight).max(axis=0), 1e-12) / FP8_E4M3_MAX).astype(np.float32)
            rounded = quantize_fp8_reference(torch.from_numpy(weight), torch.from_numpy(1 / scale))
            initializers[name].raw_data = rounded.view(torch.uint8).numpy().tobytes()
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(scale, node.input[1]))
    onnx.save(model, str(qdq_path))


def static_int8_from_onnx(
    onnx_path: Path,
    checkpoint: Path,
    calibration_csv: Path,
    evaluation_csv: Path,
    calibration_texts: int = DEFAULT_CALIBRATION_TEXTS,
    budget_points: float = DEFAULT_BUDGET_POINTS,
    seed: int = 0,
) -> QuantizationRecord:
    """Write model.int8.onnx (the onnxruntime backend's) beside `onnx_path`, check it against the budget,
    and record it in the spec there. Raises `QuantizationBudgetError` (and removes the file) over the budget."""
    data = CalibrationData.load(onnx_path.parent, checkpoint, calibration_csv, evaluation_csv, calibration_texts, seed)
    return onnxruntime_int8(onnx_path, data, budget_points)


def onnxruntime_int8(onnx_path: Path, data: CalibrationData, budget_points: float) -> QuantizationRecord:
    """`write_qdq_onnx` for the onnxruntime backend's model.int8.onnx, recorded in the spec beside `onnx_path`."""
    record = write_qdq_onnx(onnx_path, ONNXRUNTIME_INT8, data, budget_points)
    replace(data.spec, quantization=record).save(onnx_path.parent)
    return record


def tensorrt_qdq_onnx(onnx_path: Path, precision: str, data: CalibrationData, budget_points: float) -> QuantizationRecord:
    """Write TensorRT's `precision` ("int8" / "fp8") QDQ graph beside `onnx_path`, its record beside it as JSON."""
    qdq = TENSORRT_FORMATS[precision]
    record = write_qdq_onnx(onnx_path, qdq, data, budget_points)
    layout.sidecar_path(onnx_path.with_name(qdq.file_name)).write_text(json.dumps(asdict(record), indent=1) + "\n")
    return record


def torch_batches(data: CalibrationData, texts: list[str], batch_size: int = 16, pairs: list[str] | None = None):
    """(input_ids, token_type_ids, attention_mask) int64 tensors of `texts` (with `pairs`: of the pairs) in
    order, `batch_size` at a time."""
    import torch

    for first in range(0, len(texts), batch_size):
        chunk_pairs = pairs[first : first + batch_size] if pairs else None
        feeds = onnx_feeds(data.tokenizer, data.spec, texts[first : first + batch_size], pairs=chunk_pairs)
        yield tuple(torch.from_numpy(feeds[name]) for name in ("input_ids", "token_type_ids", "attention_mask"))


def fp8_scales(checkpoint: Path, export_dir: Path, data: CalibrationData, budget_points: float) -> QuantizationRecord:
    """Calibrate the FP8 scales of the torch_cuda backend on `data.calibration`, check the FP8 model's accuracy
    (emulated in float32 on the CPU: the same FP8 roundings) against the budget, and write fp8_scales.json
    (with its record) into `export_dir`. Raises `QuantizationBudgetError` over the budget (nothing written)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from handler.kernels.fp8_bert import Fp8BertClassifier, calibrate
    from handler.kernels.fused_bert import FusedBertClassifier

    hf_model = AutoModelForSequenceClassification.from_pretrained(checkpoint, local_files_only=True, dtype=torch.float32)
    fused = FusedBertClassifier.from_hf(hf_model.eval()).eval()
    calibration = calibrate(fused, torch_batches(data, data.calibration, pairs=data.calibration_pairs), data.calibration_source, data.seed)
    fp8 = Fp8BertClassifier(fused, calibration).to_device(torch.device("cpu"), torch.float32)
    accuracy = [torch_accuracy(module, data) for module in (fused, fp8)]
    record = data.record(FP8_SCALES_METHOD, "MinMax", budget_points, *accuracy)
    replace(calibration, record=asdict(record)).save(export_dir / layout.FP8_SCALES_FILE)
    return record


def torch_accuracy(module, data: CalibrationData) -> float:
    """`quality` of a fused-BERT `module` on `data`'s evaluation texts (or pairs), in length-sorted batches."""
    import torch

    texts, pairs = data.evaluation_texts, data.evaluation_pairs
    order = length_order(texts, pairs)
    with torch.inference_mode():
        batches = torch_batches(data, [texts[i] for i in order], pairs=[pairs[i] for i in order] if pairs else None)
        in_order = np.concatenate([module(*batch).float().numpy() for batch in batches])
    outputs = np.empty_like(in_order)
    outputs[order] = in_order
    return quality(data.spec, outputs, data.evaluation_labels)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The quantization options, shared by this command and `export.onnx_export --int8`."""
    csv_kind = f"label,txt CSV (label,txt,{PAIR_COLUMN} for pair models; float labels for regression)"
    parser.add_argument("--calibration", type=Path, default=Path("artifacts/data/train.csv"), help=f"{csv_kind} to sample calibration texts from")
    parser.add_argument("--calibration-texts", type=int, default=DEFAULT_CALIBRATION_TEXTS)
    parser.add_argument("--evaluation", type=Path, default=Path("artifacts/data/test.csv"), help=f"{csv_kind} the budget is checked on")
    parser.add_argument(
        "--budget-points", type=float, default=DEFAULT_BUDGET_POINTS,
        help="largest loss accepted, in accuracy points (regression: points of 100 x Pearson r)",
    )  # fmt: skip


#: what `--write` can ask for: the onnxruntime backend's int8 ONNX, TensorRT's QDQ graphs, torch_cuda's FP8 scales
OUTPUTS = ("onnxruntime-int8", "tensorrt-int8", "tensorrt-fp8", "torch-fp8")


def quantize_from_args(onnx_path: Path, checkpoint: Path, args: argparse.Namespace, outputs: tuple[str, ...] = ("onnxruntime-int8",)) -> list[QuantizationRecord]:
    """Write each of `outputs` (names in OUTPUTS) with the options of `add_arguments`; print what each cost."""
    for option, path in (("--calibration", args.calibration), ("--evaluation", args.evaluation)):
        if not Path(path).is_file():
            raise DataError(f"{path} does not exist: quantization needs labelled texts, pass {option} CSV (label,txt; label,txt,{PAIR_COLUMN} for pair models)")
    data = CalibrationData.load(onnx_path.parent, checkpoint, args.calibration, args.evaluation, args.calibration_texts)
    records = []
    for output in outputs:
        if output == "onnxruntime-int8":
            record = onnxruntime_int8(onnx_path, data, args.budget_points)
            written = onnx_path.with_name(ONNXRUNTIME_INT8.file_name)
        elif output == "torch-fp8":
            record = fp8_scales(checkpoint, onnx_path.parent, data, args.budget_points)
            written = onnx_path.with_name(layout.FP8_SCALES_FILE)
        else:
            precision = output.removeprefix("tensorrt-")
            record = tensorrt_qdq_onnx(onnx_path, precision, data, args.budget_points)
            written = onnx_path.with_name(TENSORRT_FORMATS[precision].file_name)
        print(
            f"wrote {written} ({record.method}, {record.calibration_texts} calibration texts): {record.metric} {record.accuracy_quantized} "
            f"vs fp32 {record.accuracy_fp32} on {record.evaluation_texts} texts ({record.loss_points} points lost, budget {record.budget_points})"
        )
        records.append(record)
    return records


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/default/checkpoint"))
    parser.add_argument("--onnx", type=Path, default=Path("artifacts/default/export") / layout.ONNX_FILE)
    parser.add_argument("--write", nargs="+", choices=OUTPUTS, default=["onnxruntime-int8"], help="what to write (default: the onnxruntime backend's int8 ONNX)")
    add_arguments(parser)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    quantize_from_args(args.onnx, args.checkpoint, args, tuple(args.write))


if __name__ == "__main__":
    run_cli(main)
