"""Texts in, predictions out: one tokenizer call per batch, then the backend, then softmax."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from handler.backends import CHECKPOINT_SUBDIR, Backend
from handler.spec import ModelSpec


def load_tokenizer(model_dir: str | Path):
    """The fast tokenizer saved with the checkpoint inside the model directory (never the hub)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(model_dir) / CHECKPOINT_SUBDIR, local_files_only=True)
    if not getattr(tokenizer, "is_fast", False):
        raise RuntimeError("the checkpoint has no fast tokenizer (tokenizer.json); re-save it with transformers' fast tokenizer")
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
        self.last_timings = BatchTimings()

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenize all texts at once, padded to the longest and truncated to `max_length`."""
        encoded = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_token_type_ids=True,
        )
        return {name: encoded[name] for name in self.spec.input_names}

    def logits(self, texts: list[str]) -> torch.Tensor:
        """Float32 logits [len(texts), num_labels], in the order of `texts`."""
        timings = BatchTimings(texts=len(texts))
        start = time.perf_counter()
        inputs = self.encode(texts)
        timings.tokens = int(inputs["attention_mask"].sum())
        timings.tokenize_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        chunk = self.backend.max_batch_size or len(texts)
        outputs = []
        for first in range(0, len(texts), chunk):
            part = {name: tensor[first : first + chunk] for name, tensor in inputs.items()}
            timings.chunks.append(part["input_ids"].shape[0])
            outputs.append(self.backend.infer(part))
        timings.infer_ms = (time.perf_counter() - start) * 1000
        self.last_timings = timings
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]

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
