"""TorchServe entry point of bert_trt: one class, a thin door over the service core (handler/service.py).

Response schema (one per text):
    {"label": "positive", "score": 0.97,
     "probabilities": {"negative": 0.01, "neutral": 0.02, "positive": 0.97},
     "truncated": false, "tokens": 14, "backend": "torch_cpu"}
("tokens": the text's token count, special tokens included; "truncated": some of them were not classified,
under the archive's truncation policy; with truncation "chunks" also "chunks": windows averaged.)
A JSON object may ask for more (handler/payload.py:ResponseOptions): "top_k", "return_logits", and for
multi-label models "threshold" (their answers carry "labels", every label at or above it).
Pair models answer {"text": ..., "text_pair": ...} with "pair_tokens" and "truncated_side" added; a
regression model answers {"score": 3.71, "truncated", "tokens", "backend"}; a {"query", "texts"} reranking
request gets one list of {"index", "score", "truncated", "backend"}, best first (docs/models-and-training.md ("Task shapes")).
A request that sent a list of texts gets a list of these, in order. A bad request gets
``{"error": "...", "code": 4xx}`` with that HTTP status (handler/http_status.py); the rest of its batch is answered.
"""

from __future__ import annotations

import logging

from handler.errors import RequestRejected
from handler.http_status import error_body, error_bytes, http_status
from handler.metrics import metrics_for
from handler.payload import is_torchserve_request, parse_request
from handler.service import ClassifierService, load_service
from handler.settings import HandlerSettings

logger = logging.getLogger(__name__)

#: every answer and every error is JSON, encoded here once (TorchServe's worker sends bytes as they are)
JSON_CONTENT_TYPE = "application/json"


class BertTrtHandler:
    """Decode each TorchServe request, let the service answer the batch, map rejections to HTTP statuses."""

    def __init__(self):
        self.initialized = False
        self.service: ClassifierService | None = None
        self.settings = HandlerSettings()

    def initialize(self, context) -> None:
        """Load spec, tokenizer and the first backend that can run in this worker."""
        properties = context.system_properties
        model_dir = properties["model_dir"]
        model_yaml = getattr(context, "model_yaml_config", None) or {}
        self.settings = HandlerSettings.from_model_yaml(model_yaml).for_workers(model_yaml.get("minWorkers"))
        gpu_id = properties.get("gpu_id")  # None: TorchServe gave this worker no GPU
        metrics = metrics_for(getattr(context, "metrics", None))
        self.service, self.skipped_backends = load_service(model_dir, self.settings, None if gpu_id is None else int(gpu_id), metrics)
        classifier = self.service.classifier
        logger.info("bert_trt ready: %s, max_length=%d, labels=%s", classifier.backend.describe(), classifier.max_length, classifier.labels)
        self.initialized = True

    @property
    def classifier(self):
        """The service's classifier (tests and benchmarks read its labels, backend and reference answers)."""
        return self.service.classifier

    def handle(self, data: list[dict], context) -> list:
        """Answer every request of the batch, in order: a prediction, a list of them, or an error; as JSON
        bytes for TorchServe's frontend, as JSON values for a request envelope (TorchServe's "kserve")."""
        batch = []
        for request in data:
            try:
                batch.append(parse_request(request, self.settings.max_texts_per_request))
            except RequestRejected as rejection:
                batch.append(rejection)
        as_bytes = all(is_torchserve_request(request) for request in data)
        responses = []
        for index, result in enumerate(self.service.run(batch)):
            if as_bytes:
                context.set_response_content_type(index, JSON_CONTENT_TYPE)
            if isinstance(result, RequestRejected):
                context.set_response_status(http_status(result), result.message, index)
                responses.append(error_bytes(result) if as_bytes else error_body(result))
            else:
                responses.append(self.service.json_bytes(result) if as_bytes else self.service.json_answers(result))
        return responses
