"""Texts in, predictions out: one tokenizer call per batch (with the truncation policy), length-sorted
chunks to the backend, softmax (sigmoid for multi-label models, nothing for regression), answers shaped by
each request's options. An input is a text, or a (text, text_pair) pair for a pair model (handler/payload.py).

Plain numpy throughout: with the ONNX Runtime backend a worker imports neither torch nor transformers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from handler.backends.base import Backend
from handler.backends.selection import choose_backend
from handler.errors import InvalidInput, SettingsError
from handler.payload import ParsedRequest, ResponseOptions, TextInput
from handler.settings import PAIR_MODEL_TRUNCATION_POLICIES, HandlerSettings
from handler.spec import ModelSpec
from handler.tokenizer import FastTokenizer, load_tokenizer

#: a multi-label model predicts every label whose probability is at least this, unless a request says otherwise
DEFAULT_THRESHOLD = 0.5


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (probabilities are rounded to 6 digits afterwards)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64 (multi-label probabilities)."""
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


@dataclass
class BatchTimings:
    """What one `run` call did: milliseconds per stage, texts, real tokens, and the windows per backend call."""

    tokenize_ms: float = 0.0
    infer_ms: float = 0.0
    texts: int = 0
    tokens: int = 0
    chunks: list[int] = field(default_factory=list)


def identity(logits: np.ndarray) -> np.ndarray:
    """Regression scores as the model outputs them, in float64."""
    return logits.astype(np.float64)


@dataclass(frozen=True)
class EncodedTexts:
    """Token windows of a batch of inputs (one per input, several with truncation "chunks"), the input each
    window belongs to, each window's token types (None: no pairs, one type), and per input: its token count,
    whether some tokens are in no window, and for pairs each text's tokens and which text was cut."""

    input_ids: list[list[int]]
    owners: list[int]
    tokens: list[int]
    truncated: list[bool]
    type_ids: list[list[int]] | None = None
    pair_tokens: list[tuple[int, int] | None] = field(default_factory=list)
    truncated_side: list[str | None] = field(default_factory=list)


@dataclass(frozen=True)
class TextPrediction:
    """The model's answer for one input: probabilities and logits per label (averaged over its windows; a
    regression model's one score is both), and how the input was read."""

    probabilities: np.ndarray
    logits: np.ndarray
    truncated: bool
    tokens: int
    windows: int
    #: pairs: tokens of text and text_pair before truncation (special tokens excluded)
    pair_tokens: tuple[int, int] | None = None
    #: pairs: "text", "text_pair" or "both" when tokens were cut
    truncated_side: str | None = None


class TextClassifier:
    """Tokenizes a batch of texts in one call, runs the backend in chunks, returns label probabilities."""

    def __init__(
        self, tokenizer: FastTokenizer, backend: Backend, spec: ModelSpec, max_length: int | None = None,
        truncation: str = "head", max_chunks: int = 1, max_batch_tokens: int | None = None, pair_truncation: str = "longest_first",
    ):  # fmt: skip
        self.tokenizer = tokenizer
        self.backend = backend
        self.spec = spec
        limits = [spec.max_length, max_length, backend.max_sequence_length]
        self.max_length = min(limit for limit in limits if limit)
        self.labels = spec.labels
        self.pad_id = tokenizer.pad_id
        self.truncation = truncation
        self.max_chunks = max_chunks
        #: padded tokens (windows x longest window) one backend call may hold; None: only the count bounds it
        self.max_batch_tokens = max_batch_tokens
        #: pair models: which text of a pair is cut first (handler/settings.py PAIR_TRUNCATION_POLICIES)
        self.pair_truncation = pair_truncation
        if spec.text_pair and truncation not in PAIR_MODEL_TRUNCATION_POLICIES:
            raise SettingsError(
                f"truncation {truncation!r} has no meaning for a pair model; use truncation head and choose which text is cut "
                "with pair_truncation (longest_first, only_first, only_second), then rebuild the .mar"
            )
        self.activation = identity if spec.regression else sigmoid if spec.multi_label else softmax

    def encode(self, texts: list[TextInput]) -> EncodedTexts:
        """Tokenize all inputs in one call into windows of at most max_length tokens (the truncation policy;
        pairs in one window each, cut under pair_truncation)."""
        encoded = self.tokenizer.encode_texts(texts, self.max_length, self.truncation, self.max_chunks, self.pair_truncation)
        windows = [(owner, window) for owner, text in enumerate(encoded) for window in text.windows]
        ids, owners, tokens, truncated = [window for _, window in windows], [owner for owner, _ in windows], [t.tokens for t in encoded], [t.truncated for t in encoded]
        if not self.spec.text_pair:  # single texts: one token type, nothing per pair (the check refused pairs)
            return EncodedTexts(ids, owners, tokens, truncated, None, [None] * len(encoded), [None] * len(encoded))
        single = self.tokenizer.type_id
        type_ids = [types for text in encoded for types in (text.type_windows or [[single] * len(window) for window in text.windows])]
        return EncodedTexts(ids, owners, tokens, truncated, type_ids, [t.pair_tokens for t in encoded], [t.truncated_side for t in encoded])

    def chunks(self, encoded: EncodedTexts):
        """Sort the windows by length and yield (indices, padded inputs) chunks.

        Each chunk is padded only to its own longest window, so short texts never pay for a long
        one; a chunk holds at most `backend.chunk_size` windows (None: all of them) and at most
        `max_batch_tokens` padded tokens (windows x its longest window; None: no bound), so a long text
        never drags a chunk of short ones to its length (a window longer than the budget runs alone).
        """
        ids = encoded.input_ids
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for indices in self.chunk_plan([len(ids[i]) for i in order], order):
            lengths = np.array([len(ids[i]) for i in indices])
            attended = np.arange(lengths.max()) < lengths[:, None]
            input_ids = np.full(attended.shape, self.pad_id, dtype=np.int64)
            input_ids[attended] = np.fromiter(chain.from_iterable(ids[i] for i in indices), dtype=np.int64, count=int(lengths.sum()))
            attention_mask = attended.astype(np.int64)
            if encoded.type_ids is None:
                token_type_ids = attention_mask * self.tokenizer.type_id  # one text per window: one segment
            else:  # pairs: each window's own types (segment B = 1 for BERT), 0 on padding
                token_type_ids = np.zeros(attended.shape, dtype=np.int64)
                token_type_ids[attended] = np.fromiter(chain.from_iterable(encoded.type_ids[i] for i in indices), dtype=np.int64, count=int(lengths.sum()))
            yield indices, {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}

    def chunk_plan(self, sorted_lengths: list[int], order: list[int]) -> list[list[int]]:
        """`order` (window indices sorted by length, `sorted_lengths` theirs) cut into backend calls under
        the count bound and the padded-token budget."""
        size = self.backend.chunk_size or len(order)
        budget = self.max_batch_tokens
        plan: list[list[int]] = []
        current: list[int] = []
        for index, length in zip(order, sorted_lengths):
            if current and (len(current) >= size or (budget and (len(current) + 1) * length > budget)):
                plan.append(current)
                current = []
            current.append(index)
        if current:
            plan.append(current)
        return plan

    def logits(self, texts: list[TextInput]) -> np.ndarray:
        """Float32 logits [len(texts), num_labels], in the order of `texts` (averaged over a text's windows)."""
        return np.array([prediction.logits for prediction in self.predict(texts)], dtype=np.float32).reshape(len(texts), len(self.labels))

    def predict(self, texts: list[TextInput]) -> list[TextPrediction]:
        """One `TextPrediction` per text, in order."""
        return self.run(texts)[0]

    def run(self, texts: list[TextInput]) -> tuple[list[TextPrediction], BatchTimings]:
        """One `TextPrediction` per text, in order, and what the call cost. Safe from several threads at
        once: the classifier keeps no per-call state, and the backend serialises what it must (registry)."""
        if not texts:
            return [], BatchTimings()
        timings = BatchTimings(texts=len(texts))
        start = time.perf_counter()
        encoded = self.encode(texts)
        chunks = list(self.chunks(encoded))
        timings.tokens = sum(int(inputs["attention_mask"].sum()) for _, inputs in chunks)
        timings.tokenize_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        window_logits = np.empty((len(encoded.owners), len(self.labels)), dtype=np.float32)
        for indices, inputs in chunks:
            timings.chunks.append(len(indices))
            window_logits[indices] = self.backend.infer(inputs)
        timings.infer_ms = (time.perf_counter() - start) * 1000
        activation = self.activation
        # a text's windows are consecutive rows (encode keeps text order): average each run of rows
        windows = np.bincount(encoded.owners, minlength=len(texts))
        starts = np.concatenate([[0], np.cumsum(windows)[:-1]])
        probabilities = np.add.reduceat(activation(window_logits), starts, axis=0) / windows[:, None]
        logits = np.add.reduceat(window_logits.astype(np.float64), starts, axis=0) / windows[:, None]
        predictions = [
            TextPrediction(
                probabilities[text], logits[text], encoded.truncated[text], encoded.tokens[text], int(windows[text]),
                encoded.pair_tokens[text], encoded.truncated_side[text],
            )  # fmt: skip
            for text in range(len(texts))
        ]
        return predictions, timings

    def check(self, request: ParsedRequest) -> None:
        """Raise `InvalidInput` for a request this model cannot answer: a single text to a pair model, a pair to
        a single-text model, options it cannot honour, a reranking request it cannot score."""
        spec, options = self.spec, request.options
        if spec.text_pair:
            singles = [i for i, text in enumerate(request.texts) if not isinstance(text, tuple)]
            if singles:
                where = f" (text at index {singles[0]})" if request.wants_list else ""
                raise InvalidInput(f'text_pair is missing{where}: this model reads sentence pairs; send {{"text": "...", "text_pair": "..."}}')
        elif any(isinstance(text, tuple) for text in request.texts):
            what = "reranking needs a pair model (a cross-encoder)" if request.rerank else "text_pair is not accepted"
            raise InvalidInput(f'{what}: this model reads single texts; send {{"text": "..."}} without text_pair')
        if options.threshold is not None and not spec.multi_label:
            raise InvalidInput("threshold applies to multi-label models only; this model picks one label per text (use top_k)")
        if spec.regression and options.top_k and not request.rerank:
            raise InvalidInput("top_k does not apply to a regression model: it answers one score per input, not labels")
        if request.rerank and (spec.multi_label or len(self.labels) > 2):
            raise InvalidInput(
                f"reranking needs a model with one relevance score: a regression model or a 2-label classifier; this one has "
                f"{'independent labels' if spec.multi_label else f'{len(self.labels)} labels'} (send pairs with text/text_pair instead)"
            )

    def threshold_for(self, options: ResponseOptions) -> float:
        """The probability at or above which a multi-label model predicts a label, for these options."""
        return DEFAULT_THRESHOLD if options.threshold is None else options.threshold

    def answer(self, prediction: TextPrediction, options: ResponseOptions = ResponseOptions()) -> dict:
        """The response for one input: best label and score, every label's probability (a regression model:
        its score alone), how the input was read (tokens, truncated, chunks; for pairs each text's tokens and
        which text was cut), and what `options` ask for (top_k, logits, multi-label labels)."""
        labels = self.labels
        if self.spec.regression:
            answer = {"score": round(float(prediction.logits[0]), 6), "truncated": prediction.truncated, "tokens": prediction.tokens}
            self.add_reading(answer, prediction)
            if options.return_logits:
                answer["logits"] = {labels[0]: round(float(prediction.logits[0]), 6)}
            return answer
        exact = prediction.probabilities.tolist()
        probabilities = [round(p, 6) for p in exact]
        best = max(range(len(exact)), key=exact.__getitem__)  # the first of equal maxima, as argmax
        answer = {
            "label": labels[best],
            "score": probabilities[best],
            "probabilities": dict(zip(labels, probabilities)),
            "truncated": prediction.truncated,
            "tokens": prediction.tokens,
        }
        self.add_reading(answer, prediction)
        if self.spec.multi_label or options.top_k:
            order = sorted(range(len(labels)), key=lambda i: -exact[i])
            if self.spec.multi_label:
                threshold = self.threshold_for(options)
                answer["labels"] = [labels[i] for i in order if exact[i] >= threshold]
                answer["threshold"] = threshold
            if options.top_k:
                answer["top_k"] = [{"label": labels[i], "score": probabilities[i]} for i in order[: options.top_k]]
        if options.return_logits:
            answer["logits"] = {label: round(value, 6) for label, value in zip(labels, prediction.logits.tolist())}
        return answer

    def add_reading(self, answer: dict, prediction: TextPrediction) -> None:
        """How the input was read, added to its answer: windows averaged (truncation chunks), and for pairs
        each text's tokens (special tokens excluded) and which text lost tokens."""
        if self.truncation == "chunks":
            answer["chunks"] = prediction.windows
        if prediction.pair_tokens is not None:
            answer["pair_tokens"] = {"text": prediction.pair_tokens[0], "text_pair": prediction.pair_tokens[1]}
            answer["truncated_side"] = prediction.truncated_side

    def relevance(self, prediction: TextPrediction) -> float:
        """A pair's reranking score: a regression model's score, or a 2-label classifier's probability of its
        second label (id 1: "same", "relevant", "entailment"-style)."""
        return float(prediction.logits[0]) if self.spec.regression else float(prediction.probabilities[1])

    def rerank_answer(self, predictions: list[TextPrediction], request: ParsedRequest) -> list[dict]:
        """A reranking request's answer: one result per passage, best first (equal scores in request order),
        each with its index in "texts", its score, whether it was cut, and its text when asked; top_k best only."""
        scores = [self.relevance(prediction) for prediction in predictions]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: request.options.top_k or None]
        results = []
        for index in order:
            result = {"index": index, "score": round(scores[index], 6), "truncated": predictions[index].truncated}
            if request.options.return_text:
                result["text"] = request.texts[index][1]
            results.append(result)
        return results

    def classify(self, texts: list[TextInput], options: ResponseOptions = ResponseOptions()) -> list[dict]:
        """One answer per input (see `answer`), every input with the same `options`."""
        return [self.answer(prediction, options) for prediction in self.predict(texts)]


def load_classifier(model_dir: str | Path, settings: HandlerSettings, gpu_id: int | None) -> tuple[TextClassifier, list[str]]:
    """The classifier of an unpacked archive: its spec, tokenizer and the first backend that runs here
    (loaded and warmed up), and the reasons the backends before it were skipped. Both front doors
    (TorchServe's handler, the KServe server) start this way, through `handler.service.load_service`."""
    spec = ModelSpec.load(model_dir)
    tokenizer = load_tokenizer(model_dir)
    backend, skipped = choose_backend(settings, model_dir, spec, gpu_id=gpu_id, tokenizer_size=len(tokenizer))
    classifier = TextClassifier(
        tokenizer, backend, spec, settings.max_length, settings.truncation, settings.max_chunks, settings.max_batch_tokens, settings.pair_truncation
    )
    return classifier, skipped
