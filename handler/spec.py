"""The one serving spec shared by export, engine building, `build_mar.py` and the handler.

It is written once by the ONNX export (``serving_spec.json``, see handler/layout.py) and read
everywhere else, so input names, dynamic axes, the maximum sequence length and the label map are
never re-derived by hand. File names are not part of the spec: they live in handler/layout.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from handler import layout
from handler.errors import ArchiveError, SpecError

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: encoder families served (config.json's model_type); others are refused when the spec is made
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta-v2")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
#: config.json key (written by training.train) that says the model reads a pair of texts per input: (text,
#: text_pair), e.g. paraphrase, NLI, a cross-encoder reranker; export.onnx_export --text-pair sets it in the spec
#: for a checkpoint trained elsewhere
TEXT_PAIR_CONFIG_KEY = "text_pair"
#: families whose position ids start after the padding index (RoBERTa's offset): pad_token_id + 1 positions are not usable
PADDING_OFFSET_MODEL_TYPES = ("roberta", "xlm-roberta")
#: config.json key (written by training.compress) holding the CompressionRecord of a pruned + distilled student
COMPRESSION_CONFIG_KEY = "compression"
OUTPUT_NAME = "logits"
DEFAULT_MAX_LENGTH = 128
DEFAULT_OPSET = 17


@dataclass(frozen=True)
class QuantizationRecord:
    """How a quantized ONNX (or FP8 scales) was made, and what it cost: written by `export.quantize`."""

    #: "static int8 (QDQ)" (ONNX Runtime's int8), "static int8 (QDQ, symmetric)" / "static fp8 e4m3 (QDQ)" (TensorRT's)
    method: str
    #: weights per output channel, activations per tensor (from calibration)
    per_channel: bool
    calibrate_method: str
    #: which texts fixed the activation scales: file name, how many, sampling seed
    calibration_source: str
    calibration_texts: int
    seed: int
    #: which MatMuls are int8 ("weights": the 6 projections per layer; attention's two MatMuls stay fp32)
    quantized_ops: str
    evaluation_source: str
    evaluation_texts: int
    accuracy_fp32: float
    #: accuracy of the quantized model on the same texts
    accuracy_quantized: float
    #: the largest accuracy loss (points) the export accepted
    budget_points: float
    #: what accuracy_fp32 / accuracy_quantized measure: "accuracy" (share of labels right) or, for regression
    #: models, "pearson" (correlation with the gold scores; the budget is then in points of 100 x r)
    metric: str = "accuracy"

    @property
    def loss_points(self) -> float:
        """Accuracy points lost against the fp32 model (negative: the quantized model scored higher)."""
        return round(100 * (self.accuracy_fp32 - self.accuracy_quantized), 2)

    @classmethod
    def from_dict(cls, data: dict) -> "QuantizationRecord":
        """The record from its JSON form (archives written before the rename say accuracy_int8)."""
        data = dict(data)
        if "accuracy_int8" in data:
            data["accuracy_quantized"] = data.pop("accuracy_int8")
        return cls(**data)


@dataclass(frozen=True)
class CompressionRecord:
    """How a student was made from its teacher (pruned, then distilled), and what it cost: written by
    `training.compress` into the student's config.json, copied into the spec at export."""

    teacher: str
    #: the teacher's shape: layers and FFN width (neurons per layer)
    teacher_layers: int
    teacher_intermediate_size: int
    #: which teacher layers the student kept (0-based, in order) and how many FFN neurons per layer
    kept_layers: list[int]
    intermediate_size: int
    parameters_teacher: int
    parameters_student: int
    #: how layers and neurons were chosen, and on how many training texts
    importance: str
    importance_texts: int
    #: distillation: optimizer steps x batch size on `train_source`, soft-target temperature, weights of
    #: the soft (teacher) loss against the label loss and of the hidden-state loss
    train_source: str
    distillation_steps: int
    batch_size: int
    temperature: float
    soft_weight: float
    hidden_weight: float
    seed: int
    #: the accuracy gate: student against teacher on the same labelled texts (fp32 PyTorch, both)
    evaluation_source: str
    evaluation_texts: int
    metric: str
    teacher_score: float
    student_score: float
    teacher_macro_f1: float | None
    student_macro_f1: float | None
    budget_points: float
    #: wall-clock seconds of the whole compression (importance + distillation + evaluation) and the threads it had
    seconds: float
    threads: int

    @property
    def loss_points(self) -> float:
        """Points the student lost against the teacher (negative: the student scored higher)."""
        return round(100 * (self.teacher_score - self.student_score), 2)


@dataclass(frozen=True)
class ModelSpec:
    """What every stage must agree on about the classifier's inputs and outputs."""

    id2label: dict[int, str]
    max_length: int = DEFAULT_MAX_LENGTH
    opset: int = DEFAULT_OPSET
    input_names: tuple[str, ...] = INPUT_NAMES
    output_name: str = OUTPUT_NAME
    #: config.json's problem_type: one label per text (softmax), any number (independent sigmoids), or
    #: "regression" (one score per text, no activation; STS-B style)
    problem_type: str = "single_label_classification"
    #: the model reads (text, text_pair) per input, the second text as segment B (token type 1 where the family has types)
    text_pair: bool = False
    #: set when the export wrote an int8 ONNX (None: no int8 model)
    quantization: QuantizationRecord | None = None
    #: set for a pruned + distilled student (training.compress); None for a model trained directly
    compression: CompressionRecord | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.problem_type == "regression" and len(self.id2label) != 1:
            raise SpecError(f"a regression model has exactly 1 output (num_labels 1), got {self.id2label}")
        if self.problem_type != "regression" and len(self.id2label) < 2:
            raise SpecError(
                f"a classifier needs at least 2 labels, got {self.id2label}; a model with one output is a regression "
                'model: set "problem_type": "regression" in its config.json'
            )
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise SpecError(f"label ids must be 0..N-1, got {sorted(self.id2label)}")
        if not 8 <= self.max_length <= 512:
            raise SpecError(f"max_length must be within 8..512 (BERT positions), got {self.max_length}")
        if self.problem_type not in PROBLEM_TYPES:
            raise SpecError(f"problem_type {self.problem_type!r} is not served; a classifier has one of {PROBLEM_TYPES}")

    @property
    def multi_label(self) -> bool:
        """True for multi-label classifiers (independent sigmoid scores)."""
        return self.problem_type == "multi_label_classification"

    @property
    def regression(self) -> bool:
        """True for regression models (one raw score per input, no softmax)."""
        return self.problem_type == "regression"

    @property
    def labels(self) -> list[str]:
        """Label names in id order."""
        return [self.id2label[i] for i in range(len(self.id2label))]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """ONNX dynamic axes: batch and sequence on every input, batch on the logits."""
        axes = {name: {0: "batch", 1: "sequence"} for name in self.input_names}
        axes[self.output_name] = {0: "batch"}
        return axes

    def save(self, directory: str | Path) -> Path:
        """Write the spec as JSON into `directory` and return the file's path."""
        path = Path(directory) / layout.SPEC_FILE
        data = asdict(self)
        data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        data["input_names"] = list(self.input_names)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "ModelSpec":
        """Read the spec written by `save` (or by `from_checkpoint` + `save`)."""
        path = Path(directory) / layout.SPEC_FILE
        if not path.is_file():
            raise ArchiveError(
                f"{path} is missing: run `python -m export.onnx_export --checkpoint {directory}` "
                "(or ModelSpec.from_checkpoint(...).save(...)) to write it"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        data["id2label"] = {int(k): v for k, v in data["id2label"].items()}
        data["input_names"] = tuple(data["input_names"])
        for retired in ("onnx_file", "engine_file"):  # written by earlier versions; names live in handler/layout.py now
            data.pop(retired, None)
        if data.get("quantization"):
            data["quantization"] = QuantizationRecord.from_dict(data["quantization"])
        if data.get("compression"):
            data["compression"] = CompressionRecord(**data["compression"])
        return cls(**data)

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | Path, max_length: int | None = None, text_pair: bool | None = None) -> "ModelSpec":
        """Build the spec from a Hugging Face checkpoint's config.json (labels come from id2label; one label
        and no problem_type means regression, as transformers decides when training; `text_pair` None:
        config.json's "text_pair", default False)."""
        config_path = Path(checkpoint_dir) / "config.json"
        if not config_path.is_file():
            raise ArchiveError(f"{config_path} is missing: is {checkpoint_dir} a Hugging Face checkpoint directory?")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        id2label = {int(k): v for k, v in config.get("id2label", {}).items()}
        if not id2label:
            raise SpecError(f"{config_path} has no id2label: fine-tune with `python -m training.train`, which writes it")
        model_type = config.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise SpecError(
                f"{config_path}: model_type {model_type!r} is not supported; supported encoder families: {', '.join(SUPPORTED_MODEL_TYPES)} "
                "(as their *ForSequenceClassification checkpoints)"
            )
        max_length = min(max_length or DEFAULT_MAX_LENGTH, position_limit(config))
        input_names = INPUT_NAMES if uses_token_types(config) else tuple(n for n in INPUT_NAMES if n != "token_type_ids")
        problem_type = config.get("problem_type") or ("regression" if len(id2label) == 1 else "single_label_classification")
        if text_pair is None:
            text_pair = bool(config.get(TEXT_PAIR_CONFIG_KEY, False))
        compression = CompressionRecord(**config[COMPRESSION_CONFIG_KEY]) if config.get(COMPRESSION_CONFIG_KEY) else None
        if compression and compression.loss_points > compression.budget_points:
            raise SpecError(
                f"{checkpoint_dir} is a student training.compress refused ({compression.loss_points} points below its teacher, budget "
                f"{compression.budget_points}): it is kept for inspection only; compress again (more --steps, a larger student)"
            )
        return cls(id2label=id2label, max_length=max_length, input_names=input_names, problem_type=problem_type, text_pair=text_pair,
                   compression=compression)  # fmt: skip


def uses_token_types(config: dict) -> bool:
    """True when the model has segment (token type) embeddings to feed: BERT, ELECTRA. RoBERTa (one type),
    DistilBERT and DeBERTa-v2 (none by default) take no token_type_ids input."""
    return int(config.get("type_vocab_size") or 0) > 1


def position_limit(config: dict) -> int:
    """The longest sequence the model's position embeddings hold (RoBERTa-family: minus pad_token_id + 1)."""
    limit = int(config.get("max_position_embeddings", 512))
    if config.get("model_type") in PADDING_OFFSET_MODEL_TYPES:
        limit -= int(config.get("pad_token_id", 1)) + 1
    return limit
