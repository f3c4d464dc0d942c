"""TorchServe entry point of bert_trt: one class, everything else in the `handler` package.

Response schema (one per text):
    {"label": "positive", "score": 0.97,
     "probabilities": {"negative": 0.01, "neutral": 0.02, "positive": 0.97},
     "truncated": false, "tokens": 14, "backend": "torch_cpu"}
("tokens": the text's token count, special tokens included; "truncated": some of them were not classified,
under the archive's truncation policy; with truncation "chunks" also "chunks": windows averaged.)
A JSON object may ask for more (handler/payload.py:ResponseOptions): "top_k", "return_logits", and for
multi-label models "threshold" (their answers carry "labels", every label at or above it).
A request that sent a list of texts gets a list of these, in order. A bad request gets
``{"error": "...", "code": 4xx}`` with that HTTP status; the rest of its batch is answered.
"""

from __future__ import annotations

import logging
import time

from handler.classifier import TextClassifier, load_classifier
from handler.metrics import HandlerMetrics
from handler.payload import ParsedRequest, RequestError, parse_request
from handler.settings import HandlerSettings

logger = logging.getLogger(__name__)


class BertTrtHandler:
    """Tokenize a TorchServe batch once, run the chosen backend, answer each request in order."""

    def __init__(self):
        self.initialized = False
        self.classifier: TextClassifier | None = None
        self.settings = HandlerSettings()

    def initialize(self, context) -> None:
        """Load spec, tokenizer and the first backend that can run in this worker."""
        properties = context.system_properties
        model_dir = properties["model_dir"]
        model_yaml = getattr(context, "model_yaml_config", None) or {}
        self.settings = HandlerSettings.from_model_yaml(model_yaml).for_workers(model_yaml.get("minWorkers"))
        gpu_id = properties.get("gpu_id")  # None: TorchServe gave this worker no GPU
        self.classifier, self.skipped_backends = load_classifier(model_dir, self.settings, None if gpu_id is None else int(gpu_id))
        backend = self.classifier.backend
        logger.info("bert_trt ready: %s, max_length=%d, labels=%s", backend.describe(), self.classifier.max_length, self.classifier.labels)
        HandlerMetrics(getattr(context, "metrics", None)).backend_started(backend.name)
        self.initialized = True

    def handle(self, data: list[dict], context) -> list:
        """Answer every request of the batch, in order: a prediction, a list of them, or an error."""
        metrics = HandlerMetrics(getattr(context, "metrics", None))
        start = time.perf_counter()
        parsed: list[ParsedRequest | RequestError] = []
        for request in data:
            try:
                item = parse_request(request, self.settings.max_texts_per_request)
                self.classifier.check(item.options)
                parsed.append(item)
            except RequestError as error:
                parsed.append(error)

        texts = [text for item in parsed if isinstance(item, ParsedRequest) for text in item.texts]
        predictions = iter(self.classifier.predict(texts))
        backend_name = self.classifier.backend.name

        responses = []
        for index, item in enumerate(parsed):
            if isinstance(item, RequestError):
                context.set_response_status(item.status, item.message, index)
                responses.append(item.to_response())
                continue
            answers = [dict(self.classifier.answer(next(predictions), item.options), backend=backend_name) for _ in item.texts]
            responses.append(answers if item.wants_list else answers[0])

        rejected = sum(isinstance(item, RequestError) for item in parsed)
        total_ms = (time.perf_counter() - start) * 1000
        metrics.batch_done(backend=backend_name, requests=len(data), rejected=rejected, timings=self.classifier.last_timings, total_ms=total_ms)
        logger.info("batch: %d requests, %d texts, %d rejected, %.2f ms", len(data), len(texts), rejected, total_ms)
        return responses
