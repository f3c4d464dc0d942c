"""Texts in, predictions out: one tokenizer call per batch, length-sorted chunks to the backend, softmax."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from handler import layout
from handler.backends.base import Backend
from handler.errors import ArchiveError
from handler.spec import ModelSpec


def load_tokenizer(model_dir: str | Path):
    """The fast tokenizer saved with the checkpoint inside the model directory (never the hub)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(model_dir) / layout.CHECKPOINT_DIR, local_files_only=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ArchiveError("the checkpoint has no fast tokenizer (tokenizer.json); re-save it with transformers' fast tokenizer")
    return tokenizer


@dataclass
class BatchTimings:
    """Milliseconds spent in each stage of the last `classify` call."""

    tokenize_ms: float = 0.0
    infer_ms: float = 0.0
    texts: int = 0
    tokens: int = 0
    chunks: list[int] = field(default_factory=list)


class TextClassifier:
    """Tokenizes a batch of texts in one call, runs the backend in chunks, returns label probabilities."""

    def __init__(self, tokenizer, backend: Backend, spec: ModelSpec, max_length: int | None = None):
        self.tokenizer = tokenizer
        self.backend = backend
        self.spec = spec
        limits = [spec.max_length, max_length, backend.max_sequence_length]
        self.max_length = min(limit for limit in limits if limit)
        self.labels = spec.labels
        self.pad_id = tokenizer.pad_token_id or 0
        self.last_timings = BatchTimings()

    def chunks(self, texts: list[str]):
        """Tokenize all texts in one call, sort them by length, and yield (indices, padded inputs) chunks.

        Each chunk is padded only to its own longest text, so short texts never pay for a long
        one; a chunk holds at most `backend.chunk_size` texts (None: all of them).
        """
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, return_token_type_ids=True, return_attention_mask=False)
        ids, types = encoded["input_ids"], encoded["token_type_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        size = self.backend.chunk_size or len(texts)
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
            arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            yield indices, {name: torch.from_numpy(array) for name, array in arrays.items()}

    def logits(self, texts: list[str]) -> torch.Tensor:
        """Float32 logits [len(texts), num_labels], in the order of `texts`."""
        timings = BatchTimings(texts=len(texts))
        start = time.perf_counter()
        chunks = list(self.chunks(texts))
        timings.tokens = sum(int(inputs["attention_mask"].sum()) for _, inputs in chunks)
        timings.tokenize_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        output = torch.empty((len(texts), len(self.labels)), dtype=torch.float32)
        for indices, inputs in chunks:
            timings.chunks.append(len(indices))
            output[indices] = self.backend.infer(inputs).float()
        timings.infer_ms = (time.perf_counter() - start) * 1000
        self.last_timings = timings
        return output

    def classify(self, texts: list[str]) -> list[dict]:
        """One prediction dict per text: label, score, and every label's probability."""
        if not texts:
            self.last_timings = BatchTimings()
            return []
        probabilities = torch.softmax(self.logits(texts).float(), dim=-1).tolist()
        return [self._prediction(row) for row in probabilities]

    def _prediction(self, row: list[float]) -> dict:
        best = max(range(len(row)), key=row.__getitem__)
        return {
            "label": self.labels[best],
            "score": round(row[best], 6),
            "probabilities": {label: round(p, 6) for label, p in zip(self.labels, row)},
        }
