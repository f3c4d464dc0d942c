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

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


@dataclass(frozen=True)
class Encoded:
    """Ids of one text (special tokens included) and whether tokens were cut to fit max_length."""

    ids: list[int]
    type_ids: list[int]
    truncated: bool


class FastTokenizer:
    """Batch tokenization with right-side truncation and no padding (the classifier pads per chunk)."""

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
        self.truncation_length: int | None = None
        self.pad_id = self._pad_id(checkpoint_dir)

    def __len__(self) -> int:
        """Vocabulary size with added tokens (what `len()` of a transformers tokenizer gives)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: list[str], max_length: int) -> list[Encoded]:
        """Ids of every text, each cut to at most `max_length` tokens (special tokens included)."""
        if self.truncation_length != max_length:
            self.tokenizer.enable_truncation(max_length)
            self.truncation_length = max_length
        encodings = self.tokenizer.encode_batch(texts)
        return [Encoded(encoding.ids, encoding.type_ids, bool(encoding.overflowing)) for encoding in encodings]

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
