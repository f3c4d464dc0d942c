"""The checkpoint's fast tokenizer, read straight from ``tokenizer.json`` with the `tokenizers` library.

The worker needs nothing else to turn texts into ids: no `transformers`, and through it no torch
(importing transformers' tokenizer costs ~240 MiB of resident memory, the `tokenizers` library ~6).
The ids are exactly those of ``AutoTokenizer.from_pretrained(checkpoint)(texts, truncation=True,
max_length=n)`` (tests/handler/test_tokenizer.py checks it on the default corpus).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from handler import layout
from handler.errors import ArchiveError

#: a text is cut to max_length x this many characters (x max_chunks with "chunks") before tokenizing: a guard
#: against megabyte texts (1 MB took 1 s to tokenize on 2 cores, for 128 tokens kept). Tokens kept are exactly
#: what they would be for any text whose tokens average fewer characters than this (whitespace included).
CHARACTERS_PER_TOKEN_BOUND = 32

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


@dataclass(frozen=True)
class Encoded:
    """Ids of one text (special tokens included) and whether tokens were cut to fit max_length."""

    ids: list[int]
    type_ids: list[int]
    truncated: bool


@dataclass(frozen=True)
class EncodedText:
    """What the model sees of one text: one or more windows of ids (special tokens included), how many
    tokens the text had (special tokens included), and whether some of them are in no window."""

    windows: list[list[int]]
    tokens: int
    truncated: bool


def content_windows(content: list[int], budget: int, policy: str, max_chunks: int = 1) -> tuple[list[list[int]], bool]:
    """The pieces of a text's tokens (special tokens excluded) that the model sees under `policy` (a
    TRUNCATION_POLICIES name), each at most `budget` tokens, and whether any token was left out.
    head: the first `budget`; tail: the last; head+tail: the first quarter of the budget and the rest
    from the end; chunks: windows overlapping by a quarter that cover the text, at most `max_chunks`."""
    if len(content) <= budget:
        return [content], False
    if policy == "head":
        return [content[:budget]], True
    if policy == "tail":
        return [content[-budget:]], True
    if policy == "head+tail":
        head = budget // 4
        return [content[:head] + content[len(content) - (budget - head) :]], True
    if policy != "chunks":
        raise ValueError(f"unknown truncation policy {policy!r}")
    stride = max(1, budget - budget // 4)
    starts = list(range(0, len(content) - budget, stride)) + [len(content) - budget]
    return [content[start : start + budget] for start in starts[:max_chunks]], len(starts) > max_chunks


def clipped(text: str, characters: int, policy: str) -> str:
    """`text` cut to the characters `policy` can use (both ends for head+tail, the end for tail)."""
    if len(text) <= characters:
        return text
    if policy == "tail":
        return text[-characters:]
    if policy == "head+tail":
        return text[:characters] + " " + text[-characters:]
    return text[:characters]


class FastTokenizer:
    """Batch tokenization with a truncation policy and no padding (the classifier pads per chunk)."""

    def __init__(self, checkpoint_dir: str | Path):
        checkpoint_dir = Path(checkpoint_dir)
        path = checkpoint_dir / TOKENIZER_FILE
        if not path.is_file():
            raise ArchiveError(
                f"no {TOKENIZER_FILE} in {checkpoint_dir}: save the checkpoint's fast tokenizer there "
                "(AutoTokenizer.from_pretrained(dir).save_pretrained(dir) writes it) and rebuild the .mar"
            )
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.pad_id = self._pad_id(checkpoint_dir)
        # the special tokens a single text gets around its own (BERT: [CLS] ... [SEP]; RoBERTa: <s> ... </s>)
        framed, bare = self.tokenizer.encode("a"), self.tokenizer.encode("a", add_special_tokens=False).ids
        start = next(i for i in range(len(framed.ids)) if framed.ids[i : i + len(bare)] == bare)
        self.prefix, self.suffix = framed.ids[:start], framed.ids[start + len(bare) :]
        #: the token type of a single text's tokens (0 for every family served)
        self.type_id = framed.type_ids[start]

    def __len__(self) -> int:
        """Vocabulary size with added tokens (what `len()` of a transformers tokenizer gives)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: list[str], max_length: int) -> list[Encoded]:
        """Ids of every text, each cut to its first `max_length` tokens (special tokens included)."""
        encoded = self.encode_texts(texts, max_length, "head")
        return [Encoded(text.windows[0], [self.type_id] * len(text.windows[0]), text.truncated) for text in encoded]

    def encode_texts(self, texts: list[str], max_length: int, policy: str, max_chunks: int = 1) -> list[EncodedText]:
        """Every text as the model sees it under truncation `policy` (see `content_windows`), windows of
        at most `max_length` tokens with the special tokens around each."""
        characters = max_length * CHARACTERS_PER_TOKEN_BOUND * (max_chunks if policy == "chunks" else 1)
        budget = max_length - len(self.prefix) - len(self.suffix)
        encoded = []
        for text, encoding in zip(texts, self.tokenizer.encode_batch([clipped(t, characters, policy) for t in texts], add_special_tokens=False)):
            windows, cut = content_windows(encoding.ids, budget, policy, max_chunks)
            framed = [self.prefix + window + self.suffix for window in windows]
            encoded.append(EncodedText(framed, len(encoding.ids) + len(self.prefix) + len(self.suffix), cut or len(text) > characters))
        return encoded

    def _pad_id(self, checkpoint_dir: Path) -> int:
        config_path = checkpoint_dir / TOKENIZER_CONFIG_FILE
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        pad_token = config.get("pad_token")
        if isinstance(pad_token, dict):  # older files store an AddedToken
            pad_token = pad_token.get("content")
        pad_id = self.tokenizer.token_to_id(pad_token) if pad_token else None
        return 0 if pad_id is None else pad_id


def load_tokenizer(model_dir: str | Path) -> FastTokenizer:
    """The tokenizer saved with the checkpoint inside an extracted .mar (never the hub)."""
    return FastTokenizer(Path(model_dir) / layout.CHECKPOINT_DIR)
