"""The bert_trt classifier as a KServe model: the handler's parsing, classifier and backends behind KServe's
model server, answering the v1 and the Open Inference Protocol (v2) REST APIs.

v1   POST /v1/models/<name>:predict   {"instances": ["a text", {"text": "another"}]}
     -> {"predictions": [{"label", "score", "probabilities": {label: p}, "truncated", "backend"}, ...]}
     (each prediction is exactly what TorchServe's /predictions answers for that text)
v2   POST /v2/models/<name>/infer     {"inputs": [{"name": "text", "shape": [n], "datatype": "BYTES", "data": [...]}]}
     -> outputs "label" (BYTES [n], the top label), "score" (FP32 [n]), "probabilities" (FP32 [n, labels],
        columns named by the output's parameter "labels", a JSON list) and "truncated" (BOOL [n])
Health, readiness and metadata: KServe's /v2/health/live|ready, /v2/models/<name>[/ready], /v1/models/<name>.
A bad request is answered with the handler's own error body {"error": "...", "code": 4xx} and that status
(a body that is not JSON at all is refused by KServe itself, with 400 and {"error": "..."}).

Concurrent requests are batched by `MicroBatcher`: a request on an idle model runs at once.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import kserve
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from handler.classifier import TextClassifier, load_classifier
from handler.payload import RequestError, texts_from_value
from handler.settings import HandlerSettings
from kserve_server.batcher import BatchingSettings, MicroBatcher

logger = logging.getLogger(__name__)

TEXT_INPUT = "text"


class BertClassifierModel(kserve.Model):
    """One classifier from a model directory laid out like an unpacked .mar."""

    def __init__(self, name: str, model_dir: str | Path, settings: HandlerSettings, batching: BatchingSettings, gpu_id: int | None = None):
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.settings = settings
        self.batching = batching
        self.gpu_id = gpu_id
        self.classifier: TextClassifier | None = None
        self.batcher: MicroBatcher | None = None

    def load(self) -> bool:
        """Spec, tokenizer, the first backend that runs here (warmed up), and the batcher."""
        self.classifier, _ = load_classifier(self.model_dir, self.settings, self.gpu_id)
        self.batcher = MicroBatcher(self.classify_batch, self.batching.max_batch_texts, self.batching.max_delay_ms, self.batching.max_in_flight)
        logger.info("%s ready: %s, max_length=%d, labels=%s, %s", self.name, self.classifier.backend.describe(), self.classifier.max_length, self.classifier.labels, self.batching)
        self.ready = True
        return self.ready

    def classify_batch(self, texts: list[str]) -> list[dict]:
        """The handler's answers for one batch of texts (runs in a worker thread)."""
        start = time.perf_counter()
        backend = self.classifier.backend.name
        answers = [dict(prediction, backend=backend) for prediction in self.classifier.classify(texts)]
        logger.info("batch: %d texts, %.2f ms", len(texts), (time.perf_counter() - start) * 1000)
        return answers

    async def predict(self, payload: dict | InferRequest, headers: dict | None = None) -> dict | InferResponse:
        if isinstance(payload, InferRequest):
            texts = v2_texts(payload, self.settings.max_texts_per_request)
            return v2_response(self.name, payload.id, await self.batcher.submit(texts), self.classifier.labels)
        texts = v1_texts(payload, self.settings.max_texts_per_request)
        return {"predictions": await self.batcher.submit(texts)}

    def get_input_types(self) -> list[dict]:
        return [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        labels = len(self.classifier.labels) if self.classifier else -1
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, labels]},
            {"name": "truncated", "datatype": "BOOL", "shape": [-1]},
        ]


def v1_texts(payload, max_texts: int) -> list[str]:
    """The texts of a v1 body: {"instances": [text or {"text": text}, ...]}, checked like /predictions."""
    if not isinstance(payload, dict) or "instances" not in payload:
        raise RequestError('v1 body must be {"instances": [...]}: a list of texts or {"text": ...} objects')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise RequestError(f'"instances" must be a list, got {type(instances).__name__}')
    texts = [item["text"] if isinstance(item, dict) and "text" in item else item for item in instances]
    return texts_from_value(texts, max_texts).texts


def v2_texts(request: InferRequest, max_texts: int) -> list[str]:
    """The texts of an Open Inference Protocol request: one BYTES input named "text", checked like /predictions."""
    inputs: list[InferInput] = request.inputs
    named = [item for item in inputs if item.name == TEXT_INPUT]
    if len(named) != 1:
        raise RequestError(f'send one input named "{TEXT_INPUT}" (datatype BYTES); got inputs {[item.name for item in inputs]}')
    text_input = named[0]
    if text_input.datatype != "BYTES":
        raise RequestError(f'input "{TEXT_INPUT}" must have datatype BYTES, got {text_input.datatype}')
    values = []
    for value in text_input.data if isinstance(text_input.data, list) else [text_input.data]:
        if isinstance(value, (bytes, bytearray)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError as err:
                raise RequestError(f"text is not valid UTF-8 (byte {err.start}); send UTF-8 text") from None
        values.append(value)
    return texts_from_value(values, max_texts).texts


def v2_response(model_name: str, request_id: str | None, answers: list[dict], labels: list[str]) -> InferResponse:
    """A complete classification as v2 outputs: top label, its score, every label's probability, truncation."""
    count = len(answers)
    outputs = [
        InferOutput("label", [count], "BYTES", [answer["label"] for answer in answers]),
        InferOutput("score", [count], "FP32", [answer["score"] for answer in answers]),
        InferOutput("probabilities", [count, len(labels)], "FP32", [answer["probabilities"][label] for answer in answers for label in labels],
                    parameters={"labels": json.dumps(labels)}),  # fmt: skip
        InferOutput("truncated", [count], "BOOL", [answer["truncated"] for answer in answers]),
    ]
    backend = answers[0]["backend"] if answers else ""
    return InferResponse(request_id or "", model_name, outputs, parameters={"backend": backend})
