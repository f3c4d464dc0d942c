"""Answers are batch-invariant, so a text's prediction can be kept: an LRU of text -> `TextPrediction`.

One cache per loaded model (it lives in the service, beside the classifier it remembers), so a new model
version starts empty. Response options (top_k, return_logits, threshold) are applied to a prediction when
the answer is built, so one entry serves every option set. Safe from several threads at once (one lock
around each lookup and each store). Size 0 turns it off.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from handler.classifier import TextPrediction

class PredictionCache:
    """The `size` most recently used texts and their predictions (the default size: handler/settings.py)."""

    def __init__(self, size: int):
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"cache size must be a whole number >= 0, got {size!r}")
        self.size = size
        self.entries: OrderedDict[str, TextPrediction] = OrderedDict()
        self.lock = threading.Lock()

    def lookup(self, texts: list[str]) -> list["TextPrediction | None"]:
        """The cached prediction of each text, or None; a found entry becomes the most recently used."""
        if not self.size:
            return [None] * len(texts)
        found = []
        with self.lock:
            for text in texts:
                prediction = self.entries.get(text)
                if prediction is not None:
                    self.entries.move_to_end(text)
                found.append(prediction)
        return found

    def store(self, texts: list[str], predictions: list["TextPrediction"]) -> None:
        """Remember these predictions, forgetting the least recently used entries beyond `size`."""
        if not self.size:
            return
        with self.lock:
            for text, prediction in zip(texts, predictions):
                self.entries[text] = prediction
                self.entries.move_to_end(text)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self.entries)
