"""The service core every door shares: decoded requests in, one result or one rejection per request out.

    door (TorchServe handler, KServe REST v1/v2, KServe gRPC)
      decodes its protocol into `ParsedRequest`s (handler/payload.py), or a `RequestRejected` per bad one
        -> ClassifierService.run(batch): validate each against the model, one classifier call for every
           text of the valid ones, one `Answered` (predictions + options) or rejection per request,
           one `BatchRecord` to the metrics sink
      renders each `Answered` (JSON answers for /predictions and v1, tensors for v2) and maps each
      rejection to its status (handler/http_status.py, kserve_server/grpc_door.py)

The service is safe to call from several threads at once (the KServe server keeps batches in flight):
it holds no per-batch state, and the backend serialises the calls it must (handler/backends/registry.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import orjson

from handler.classifier import BatchTimings, TextClassifier, TextPrediction, load_classifier
from handler.errors import ModelNotReady, RequestRejected
from handler.metrics import BatchRecord, MetricsSink
from handler.payload import ParsedRequest, TextInput
from handler.prediction_cache import PredictionCache
from handler.settings import DEFAULT_RESPONSE_CACHE_SIZE, HandlerSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answered:
    """One request's predictions (one per text, in order) and the request they answer."""

    request: ParsedRequest
    predictions: list[TextPrediction]


class ClassifierService:
    """One loaded classifier behind every door; `close` makes it refuse with `ModelNotReady`."""

    def __init__(self, classifier: TextClassifier, metrics: MetricsSink | None = None, cache_size: int = DEFAULT_RESPONSE_CACHE_SIZE):
        self.classifier = classifier
        self.metrics = metrics or MetricsSink()
        #: predictions of recently seen texts (handler setting response_cache_size; 0: off)
        self.cache = PredictionCache(cache_size)
        self.ready = True
        self.metrics.backend_started(self.backend_name)

    @property
    def backend_name(self) -> str:
        """The backend that answers."""
        return self.classifier.backend.name

    def run(self, batch: Sequence[ParsedRequest | RequestRejected]) -> list[Answered | RequestRejected]:
        """Answer a batch: each request gets its `Answered`, or its rejection (from decoding or from
        validation here); the others are answered all the same. Raises only when the backend fails."""
        if not self.ready:
            raise ModelNotReady("the model is not loaded (it is starting or shutting down): retry, or send to another replica")
        start = time.perf_counter()
        checked: list[ParsedRequest | RequestRejected] = []
        for item in batch:
            if isinstance(item, ParsedRequest):
                try:
                    self.classifier.check(item)  # inputs (pairs or not) and options this model cannot take
                except RequestRejected as rejection:
                    item = rejection
            checked.append(item)
        texts = [text for item in checked if isinstance(item, ParsedRequest) for text in item.texts]
        predictions, timings, hits = self.predictions(texts)
        results: list[Answered | RequestRejected] = []
        offset = 0
        for item in checked:
            if isinstance(item, RequestRejected):
                results.append(item)
                continue
            results.append(Answered(item, predictions[offset : offset + len(item.texts)]))
            offset += len(item.texts)
        rejected = sum(isinstance(item, RequestRejected) for item in checked)
        total_ms = (time.perf_counter() - start) * 1000
        record = BatchRecord(
            self.backend_name, len(batch), rejected, len(texts), timings.tokens, timings.tokenize_ms, timings.infer_ms, total_ms,
            cache_hits=hits, computed=timings.texts,
        )  # fmt: skip
        self.metrics.batch_done(record)
        logger.info("batch: %d requests, %d texts, %d rejected, %.2f ms (infer %.2f ms)", len(batch), len(texts), rejected, total_ms, timings.infer_ms)
        return results

    def predictions(self, texts: list[TextInput]) -> tuple[list[TextPrediction], BatchTimings, int]:
        """One prediction per text: from the cache where it has one, else computed (a text sent twice in
        one batch is computed once); the classifier's timings for what it computed, and the cache hits."""
        found = self.cache.lookup(texts)
        missing = list(dict.fromkeys(text for text, prediction in zip(texts, found) if prediction is None))
        computed, timings = self.classifier.run(missing)
        self.cache.store(missing, computed)
        by_text = dict(zip(missing, computed))
        predictions = [prediction if prediction is not None else by_text[text] for text, prediction in zip(texts, found)]
        return predictions, timings, sum(prediction is not None for prediction in found)

    def json_answers(self, answered: Answered) -> dict | list[dict]:
        """The JSON answer of /predictions and of each KServe v1 instance: one dict per input (a list when
        the request sent a list; a reranking request's results, best first), each with the backend that answered."""
        request = answered.request
        backend = self.backend_name
        if request.rerank:
            return [dict(result, backend=backend) for result in self.classifier.rerank_answer(answered.predictions, request)]
        answers = [dict(self.classifier.answer(prediction, request.options), backend=backend) for prediction in answered.predictions]
        return answers if request.wants_list else answers[0]

    def json_bytes(self, answered: Answered) -> bytes:
        """`json_answers` encoded once, compactly (what /predictions sends; orjson, ~20x faster than the
        indented `json.dumps` TorchServe's worker applies to a handler's dicts)."""
        return orjson.dumps(self.json_answers(answered))

    def close(self) -> None:
        """Refuse new batches and release the backend."""
        self.ready = False
        self.classifier.backend.close()


def load_service(model_dir, settings: HandlerSettings, gpu_id: int | None, metrics: MetricsSink | None = None) -> tuple[ClassifierService, list[str]]:
    """The service of an unpacked archive (its classifier on the first backend that runs here, loaded and
    warmed up), and the reasons the backends before it were skipped. Every door starts this way."""
    classifier, skipped = load_classifier(model_dir, settings, gpu_id)
    return ClassifierService(classifier, metrics, settings.response_cache_size), skipped
