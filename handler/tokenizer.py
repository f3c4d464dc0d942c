"""The checkpoint's fast tokenizer, read straight from ``tokenizer.json`` with the `tokenizers` library.

The worker needs nothing else to turn texts into ids: no `transformers`, and through it no torch
(importing transformers' tokenizer costs ~240 MiB of resident memory, the `tokenizers` library ~6).
The ids are exactly those of ``AutoTokenizer.from_pretrained(checkpoint)(texts, truncation=True,
max_length=n)`` (tests/handler/test_tokenizer.py checks it on the default corpus).
"""

from __future__ import annotations

import json
import re
import unicodedata
from itertools import chain
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
    tokens the text had (special tokens included), and whether some of them are in no window. A pair
    (text, text_pair) has one window, its token types, each text's token count and which text was cut."""

    windows: list[list[int]]
    tokens: int
    truncated: bool
    #: pairs: the token types of each window (None: a single text, every token of the tokenizer's type_id)
    type_windows: list[list[int]] | None = None
    #: pairs: tokens of text and of text_pair before truncation, special tokens excluded
    pair_tokens: tuple[int, int] | None = None
    #: pairs: "text", "text_pair" or "both" when tokens were cut, else None
    truncated_side: str | None = None


@dataclass(frozen=True)
class PairFrame:
    """The special tokens around and between the two texts of a pair, and the token type of each part, as
    the tokenizer's post-processor frames them (BERT: [CLS] A [SEP] B [SEP], types 0 0 0 1 1; RoBERTa:
    <s> A </s></s> B </s>, all 0)."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    prefix_types: list[int]
    first_type: int
    middle_types: list[int]
    second_type: int
    suffix_types: list[int]

    @property
    def special_tokens(self) -> int:
        """Special tokens a pair gets."""
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def framed(self, first: list[int], second: list[int]) -> tuple[list[int], list[int]]:
        """(ids, token types) of a pair whose texts' ids are `first` and `second`."""
        ids = self.prefix + first + self.middle + second + self.suffix
        types = self.prefix_types + [self.first_type] * len(first) + self.middle_types + [self.second_type] * len(second) + self.suffix_types
        return ids, types


def pair_lengths(first: int, second: int, budget: int, policy: str) -> tuple[int, int]:
    """Tokens kept of each text of a pair (special tokens excluded) within `budget`, under a
    PAIR_TRUNCATION_POLICIES strategy, as the tokenizers library cuts them: longest_first keeps the shorter text
    whole when the longer can give up enough, else cuts both to half the budget (the longer, or the second
    when they are equal, gets an odd token); only_first / only_second cut that text, and when it cannot give
    up enough (the library raises an error there) fall back to longest_first."""
    if first + second <= budget:
        return first, second
    excess = first + second - budget
    if policy == "only_first" and first > excess:
        return first - excess, second
    if policy == "only_second" and second > excess:
        return first, second - excess
    if policy not in ("longest_first", "only_first", "only_second"):
        raise ValueError(f"unknown pair truncation policy {policy!r}")
    short = min(first, second)
    short_cap, long_cap = short, (short if short > budget else max(short, budget - short))
    if short_cap + long_cap > budget:
        short_cap, long_cap = budget // 2, budget // 2 + budget % 2
    first_cap, second_cap = (long_cap, short_cap) if first > second else (short_cap, long_cap)
    return min(first, first_cap), min(second, second_cap)


def truncated_side(first: bool, second: bool) -> str | None:
    """Which text of a pair lost tokens: "text", "text_pair", "both" or None."""
    return "both" if first and second else "text" if first else "text_pair" if second else None


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


#: what a character normalizes to when its normalization may depend on its neighbours (a combining mark that
#: survives accent stripping, whose order NFD may change); a text containing one goes to the library
NEEDS_LIBRARY = "\x00"
#: words whose pieces the fast path remembers per worker (about 100 bytes each); beyond it, pieces are computed
WORD_CACHE_LIMIT = 200_000
ASCII_PUNCTUATION = "".join(chr(code) for code in range(33, 127) if not chr(code).isalnum())


class NormalizedCharacters(dict):
    """Code point -> what BERT's normalizer makes of that character, asked of the library once per character
    (clean-up, Chinese characters spaced, accents stripped, lower case: each acts on one character alone).
    Used as a `str.translate` table; `punctuation` collects the non-ASCII characters the normalizer can
    produce that BERT's pre-tokenizer splits off as punctuation."""

    def __init__(self, normalizer, pre_tokenizer, strips_accents: bool):
        super().__init__()
        self.normalizer = normalizer
        self.pre_tokenizer = pre_tokenizer
        self.strips_accents = strips_accents
        self.punctuation: set[str] = set()
        for code in range(128):
            self[code] = self.__missing__(code)

    def __missing__(self, code: int) -> str:
        character = chr(code)
        if self.strips_accents and any(
            unicodedata.combining(part) and unicodedata.category(part) != "Mn" for part in unicodedata.normalize("NFD", character)
        ):
            normalized = NEEDS_LIBRARY
        else:
            normalized = self.normalizer.normalize_str(character)
            for output in normalized:
                kind = self.kind(output)
                if kind == "space" and output != " ":
                    normalized = NEEDS_LIBRARY
                elif kind == "punctuation" and not output.isascii():
                    self.punctuation.add(output)
        self[code] = normalized
        return normalized

    def kind(self, character: str) -> str:
        """How BERT's pre-tokenizer treats a character: "space", "punctuation" (split off alone) or "word"."""
        pieces = self.pre_tokenizer.pre_tokenize_str(f"a{character}a")
        return {1: "word", 2: "space", 3: "punctuation"}[len(pieces)]


class WordPieceFastPath:
    """BERT's tokenizer (BertNormalizer, BertPreTokenizer, WordPiece) in a few lines of Python, with each
    character's normalization and each word's pieces remembered: ~4x faster than `tokenizers` on one core
    for English texts (the library spends most of its time on alignment bookkeeping the classifier never
    reads). Gives exactly the library's ids (tests/handler/test_tokenizer.py: the corpora, every character of
    the Basic Multilingual Plane, random mixed strings); `for_tokenizer` returns None for any other layout,
    and `ids` returns None for a text the library must do (it contains an added token such as [MASK], or a
    combining mark that survives normalization). Safe from several threads: its tables only grow, and an
    entry computed twice is computed the same."""

    def __init__(self, tokenizer, strips_accents: bool, added_tokens: list[str]):
        self.model = tokenizer.model
        # conservative: a text with an added token in any letter case, before or after normalization, goes to the
        # library (which knows which of them match)
        self.added_pattern = re.compile("|".join(map(re.escape, added_tokens)), re.IGNORECASE) if added_tokens else None
        self.characters = NormalizedCharacters(tokenizer.normalizer, tokenizer.pre_tokenizer, strips_accents)
        #: the punctuation the word pattern splits off, and the pattern: one tuple, replaced whole, so that a
        #: thread never pairs a new set with an old pattern
        self.words: tuple[frozenset[str], re.Pattern] = (frozenset(), re.compile(self.word_pattern(frozenset())))
        self.pieces: dict[str, list[int]] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer, config: dict) -> "WordPieceFastPath | None":
        """The fast path for a tokenizer.json `config` with BERT's layout, else None."""
        normalizer, pre_tokenizer, model = config.get("normalizer") or {}, config.get("pre_tokenizer") or {}, config.get("model") or {}
        if normalizer.get("type") != "BertNormalizer" or not normalizer.get("clean_text", True):
            return None
        if pre_tokenizer.get("type") != "BertPreTokenizer" or model.get("type") != "WordPiece":
            return None
        lowercase = bool(normalizer.get("lowercase", True))
        strip_accents = normalizer.get("strip_accents")
        added = [token["content"] for token in config.get("added_tokens") or []]
        return cls(tokenizer, lowercase if strip_accents is None else bool(strip_accents), added)

    @staticmethod
    def word_pattern(punctuation: frozenset[str]) -> str:
        """Runs of word characters, or one punctuation character (after normalization, spaces are " ")."""
        split_off = re.escape(ASCII_PUNCTUATION + "".join(sorted(punctuation)))
        return f"[^ {split_off}]+|[{split_off}]"

    def ids(self, text: str) -> list[int] | None:
        """Token ids of a text, special tokens excluded (the library's `add_special_tokens=False`), or None."""
        if self.added_pattern is not None and self.added_pattern.search(text):
            return None
        normalized = text.translate(self.characters)
        if NEEDS_LIBRARY in normalized or (self.added_pattern is not None and self.added_pattern.search(normalized)):
            return None
        known, pattern = self.words
        if len(self.characters.punctuation) != len(known):  # this text's characters taught it new punctuation
            known = frozenset(self.characters.punctuation)
            pattern = re.compile(self.word_pattern(known))
            self.words = (known, pattern)
        words = pattern.findall(normalized)
        found = list(map(self.pieces.get, words))  # one C-level loop over the remembered words
        if None in found:
            for index, word in enumerate(words):
                if found[index] is None:
                    found[index] = self.word_ids(word)
        return list(chain.from_iterable(found))

    def word_ids(self, word: str) -> list[int]:
        """WordPiece ids of one pre-tokenized word (remembered while the cache has room)."""
        ids = [token.id for token in self.model.tokenize(word)]
        if len(self.pieces) < WORD_CACHE_LIMIT:
            self.pieces[word] = ids
        return ids


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
        #: the pure-Python path (None: this tokenizer is not BERT's WordPiece layout)
        self.fast_path = WordPieceFastPath.for_tokenizer(self.tokenizer, json.loads(path.read_text(encoding="utf-8")))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.pad_id = self._pad_id(checkpoint_dir)
        # the special tokens a single text gets around its own (BERT: [CLS] ... [SEP]; RoBERTa: <s> ... </s>)
        framed, bare = self.tokenizer.encode("a"), self.tokenizer.encode("a", add_special_tokens=False).ids
        start = next(i for i in range(len(framed.ids)) if framed.ids[i : i + len(bare)] == bare)
        self.prefix, self.suffix = framed.ids[:start], framed.ids[start + len(bare) :]
        #: the token type of a single text's tokens (0 for every family served)
        self.type_id = framed.type_ids[start]
        self.pair_frame = self.frame_of_pairs()

    def frame_of_pairs(self) -> PairFrame:
        """Where the post-processor puts special tokens and token types around a pair (asked of the library once)."""
        first, second = self.tokenizer.encode("a", add_special_tokens=False).ids, self.tokenizer.encode("b", add_special_tokens=False).ids
        pair = self.tokenizer.encode("a", "b")
        ids, types = pair.ids, pair.type_ids
        start = next(i for i in range(len(ids)) if ids[i : i + len(first)] == first)
        end_first = start + len(first)
        second_start = next(i for i in range(end_first, len(ids)) if ids[i : i + len(second)] == second)
        end_second = second_start + len(second)
        return PairFrame(
            ids[:start], ids[end_first:second_start], ids[end_second:], types[:start], types[start], types[end_first:second_start],
            types[second_start], types[end_second:],
        )  # fmt: skip

    def __len__(self) -> int:
        """Vocabulary size with added tokens (what `len()` of a transformers tokenizer gives)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: list[str], max_length: int) -> list[Encoded]:
        """Ids of every text, each cut to its first `max_length` tokens (special tokens included)."""
        encoded = self.encode_texts(texts, max_length, "head")
        return [Encoded(text.windows[0], [self.type_id] * len(text.windows[0]), text.truncated) for text in encoded]

    def encode_texts(
        self, texts: list, max_length: int, policy: str, max_chunks: int = 1, pair_policy: str = "longest_first"
    ) -> list[EncodedText]:
        """Every input as the model sees it, windows of at most `max_length` tokens with the special tokens
        around each: a text under truncation `policy` (see `content_windows`), a (text, text_pair) pair in one
        window framed as the tokenizer frames pairs, cut under `pair_policy` (see `pair_lengths`)."""
        characters = max_length * CHARACTERS_PER_TOKEN_BOUND * (max_chunks if policy == "chunks" else 1)
        budget = max_length - len(self.prefix) - len(self.suffix)
        if not any(isinstance(text, tuple) for text in texts):  # single texts only: no per-text pair bookkeeping
            ids_per_text = self.content_ids([clipped(t, characters, policy) for t in texts])
            return [self.encoded_single(text, ids, budget, characters, policy, max_chunks) for text, ids in zip(texts, ids_per_text)]
        sides = [side for text in texts for side in (text if isinstance(text, tuple) else (text,))]
        side_ids = iter(self.content_ids([clipped(side, characters, policy) for side in sides]))
        return [
            self.encoded_pair(text, next(side_ids), next(side_ids), max_length, characters, pair_policy)
            if isinstance(text, tuple)
            else self.encoded_single(text, next(side_ids), budget, characters, policy, max_chunks)
            for text in texts
        ]

    def encoded_single(self, text: str, ids: list[int], budget: int, characters: int, policy: str, max_chunks: int) -> EncodedText:
        """One text's windows (its ids `ids`, without special tokens) under truncation `policy`."""
        windows, cut = content_windows(ids, budget, policy, max_chunks)
        framed = [self.prefix + window + self.suffix for window in windows]
        return EncodedText(framed, len(ids) + len(self.prefix) + len(self.suffix), cut or len(text) > characters)

    def encoded_pair(self, pair: tuple[str, str], first: list[int], second: list[int], max_length: int, characters: int, policy: str) -> EncodedText:
        """One pair's window (its texts' ids `first` and `second`, without special tokens) cut to `max_length`."""
        frame = self.pair_frame
        kept_first, kept_second = pair_lengths(len(first), len(second), max_length - frame.special_tokens, policy)
        ids, types = frame.framed(first[:kept_first], second[:kept_second])
        side = truncated_side(kept_first < len(first) or len(pair[0]) > characters, kept_second < len(second) or len(pair[1]) > characters)
        tokens = len(first) + len(second) + frame.special_tokens
        return EncodedText([ids], tokens, side is not None, [types], (len(first), len(second)), side)

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids without special tokens: the fast path where it applies, one library call
        (`encode_batch_fast`: no character offsets) for the rest."""
        fast = self.fast_path
        ids: list[list[int] | None] = [fast.ids(text) for text in texts] if fast else [None] * len(texts)
        rest = [index for index, text_ids in enumerate(ids) if text_ids is None]
        if rest:
            for index, encoding in zip(rest, self.tokenizer.encode_batch_fast([texts[i] for i in rest], add_special_tokens=False)):
                ids[index] = encoding.ids
        return ids  # type: ignore[return-value]

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
