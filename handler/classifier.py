"""Texts in, predictions out: one tokenizer call per batch, length-sorted chunks to the backend, softmax.

Plain numpy throughout: with the ONNX Runtime backend a worker imports neither torch nor transformers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handler.backends.base import Backend
from handler.backends.selection import choose_backend
from handler.settings import HandlerSettings
from handler.spec import ModelSpec
from handler.tokenizer import FastTokenizer, load_tokenizer

#: a text is cut to max_length x this many characters before tokenizing. A guard against megabyte texts
#: (1 MB took 1 s to tokenize on 2 cores, for 128 tokens kept); the first max_length tokens of any text
#: whose tokens average fewer characters than this (whitespace included) are exactly what they would be.
CHARACTERS_PER_TOKEN_BOUND = 32


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (probabilities are rounded to 6 digits afterwards)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


@dataclass
class BatchTimings:
    """Milliseconds spent in each stage of the last `classify` call."""

    tokenize_ms: float = 0.0
    infer_ms: float = 0.0
    texts: int = 0
    tokens: int = 0
    chunks: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class EncodedTexts:
    """Token ids of a batch of texts (at most max_length each), and which texts lost tokens to truncation."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    truncated: list[bool]


class TextClassifier:
    """Tokenizes a batch of texts in one call, runs the backend in chunks, returns label probabilities."""

    def __init__(self, tokenizer: FastTokenizer, backend: Backend, spec: ModelSpec, max_length: int | None = None):
        self.tokenizer = tokenizer
        self.backend = backend
        self.spec = spec
        limits = [spec.max_length, max_length, backend.max_sequence_length]
        self.max_length = min(limit for limit in limits if limit)
        self.labels = spec.labels
        self.pad_id = tokenizer.pad_id
        self.last_timings = BatchTimings()

    def encode(self, texts: list[str]) -> EncodedTexts:
        """Tokenize all texts in one call, truncated to max_length tokens."""
        character_limit = self.max_length * CHARACTERS_PER_TOKEN_BOUND
        clipped = [text[:character_limit] for text in texts]
        encoded = self.tokenizer.encode_batch(clipped, self.max_length)
        truncated = [len(text) > character_limit or encoding.truncated for text, encoding in zip(texts, encoded)]
        return EncodedTexts([encoding.ids for encoding in encoded], [encoding.type_ids for encoding in encoded], truncated)

    def chunks(self, encoded: EncodedTexts):
        """Sort the texts by length and yield (indices, padded inputs) chunks.

        Each chunk is padded only to its own longest text, so short texts never pay for a long
        one; a chunk holds at most `backend.chunk_size` texts (None: all of them).
        """
        ids, types = encoded.input_ids, encoded.token_type_ids
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        size = self.backend.chunk_size or len(ids)
        for first in range(0, len(order), size):
            indices = order[first : first + size]
            longest = max(len(ids[i]) for i in indices)
            input_ids = np.full((len(indices), longest), self.pad_id, dtype=np.int64)
            token_type_ids = np.zeros((len(indices), longest), dtype=np.int64)
            attention_mask = np.zeros((len(indices), longest), dtype=np.int64)
            for row, i in enumerate(indices):
                length = len(ids[i])
                input_ids[row, :length] = ids[i]
                token_type_ids[row, :length] = types[i]
                attention_mask[row, :length] = 1
            yield indices, {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}

    def logits(self, texts: list[str]) -> np.ndarray:
        """Float32 logits [len(texts), num_labels], in the order of `texts`."""
        return self._logits_and_truncation(texts)[0]

    def classify(self, texts: list[str]) -> list[dict]:
        """One prediction dict per text: label, score, every label's probability, and whether it was truncated."""
        if not texts:
            self.last_timings = BatchTimings()
            return []
        logits, truncated = self._logits_and_truncation(texts)
        probabilities = softmax(logits).tolist()
        return [self._prediction(row, cut) for row, cut in zip(probabilities, truncated)]

    def _logits_and_truncation(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        timings = BatchTimings(texts=len(texts))
        start = time.perf_counter()
        encoded = self.encode(texts)
        chunks = list(self.chunks(encoded))
        timings.tokens = sum(int(inputs["attention_mask"].sum()) for _, inputs in chunks)
        timings.tokenize_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        output = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for indices, inputs in chunks:
            timings.chunks.append(len(indices))
            output[indices] = self.backend.infer(inputs)
        timings.infer_ms = (time.perf_counter() - start) * 1000
        self.last_timings = timings
        return output, encoded.truncated

    def _prediction(self, row: list[float], truncated: bool) -> dict:
        best = max(range(len(row)), key=row.__getitem__)
        return {
            "label": self.labels[best],
            "score": round(row[best], 6),
            "probabilities": {label: round(p, 6) for label, p in zip(self.labels, row)},
            "truncated": truncated,
        }


def load_classifier(model_dir: str | Path, settings: HandlerSettings, gpu_id: int | None) -> tuple[TextClassifier, list[str]]:
    """The classifier of an unpacked archive: its spec, tokenizer and the first backend that runs here
    (loaded and warmed up), and the reasons the backends before it were skipped. Both front doors
    (TorchServe's handler, the KServe server) start this way."""
    spec = ModelSpec.load(model_dir)
    tokenizer = load_tokenizer(model_dir)
    backend, skipped = choose_backend(settings, model_dir, spec, gpu_id=gpu_id, tokenizer_size=len(tokenizer))
    return TextClassifier(tokenizer, backend, spec, settings.max_length), skipped
