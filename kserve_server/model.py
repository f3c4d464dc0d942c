"""The bert_trt classifier as a KServe model: a thin door over the service core (handler/service.py),
answering KServe's v1 REST API and the Open Inference Protocol (v2) over REST and gRPC.

v1   POST /v1/models/<name>:predict   {"instances": ["a text", {"text": "another", "top_k": 2}]}
     -> {"predictions": [...]}: each instance is decoded exactly like one TorchServe /predictions body
        holding one input (the same options, the same 4xx messages, prefixed "instances[i]: ") and
        answered with exactly the dict TorchServe answers for it; pair models take {"text": ..., "text_pair": ...}
        instances, and a {"query": ..., "texts": [...]} instance is a reranking request (its answer: the list)
v2   POST /v2/models/<name>/infer (or gRPC ModelInfer)
     one BYTES input "text" [n] (pair models: and "text_pair" [n]); options as request parameters ("top_k",
     "return_logits", "threshold"); reranking: BYTES "query" [1] and "text" [n] -> "index" INT32 [k] and
     "score" FP32 [k], best first (k: top_k, else n)
     regression models -> "score" FP32 [n] (the raw score), "truncated", "tokens" (and "logits" when asked)
     classifiers -> "label" BYTES [n], "score" FP32 [n], "probabilities" FP32 [n, labels] (columns named by the output
        parameter "labels", a JSON list), "truncated" BOOL [n], "tokens" INT32 [n]; "chunks" INT32 [n] with
        truncation "chunks"; when asked: "top_k_labels" BYTES [n, k] and "top_k_scores" FP32 [n, k],
        "logits" FP32 [n, labels]; multi-label models: "predicted" BOOL [n, labels] (at or above the
        threshold, which the output's parameter "threshold" gives). Values come from the predictions
        themselves (float32), not from the rounded JSON.
A rejected request gets the service's message: REST {"error": "...", "code": 4xx} with that status
(handler/http_status.py), gRPC INVALID_ARGUMENT / UNAVAILABLE (kserve_server/grpc_door.py).

Concurrent requests are batched by `MicroBatcher`; up to `max_in_flight` batches run at once (the service
is thread-safe; backends that are not take their lock, so a GPU batch is tokenized while another runs).
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import kserve
import numpy as np
from google.protobuf.unknown_fields import UnknownFieldSet
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from handler.errors import InvalidInput, RequestRejected
from handler.payload import OPTION_FIELDS, ParsedRequest, checked_count, response_options, texts_from_value
from handler.service import Answered, ClassifierService, load_service
from handler.settings import HandlerSettings
from kserve_server.batcher import BatchingSettings, MicroBatcher
from kserve_server.metrics import PrometheusMetrics

logger = logging.getLogger(__name__)

TEXT_INPUT = "text"
PAIR_INPUT = "text_pair"
QUERY_INPUT = "query"
V2_INPUTS = (TEXT_INPUT, PAIR_INPUT, QUERY_INPUT)
#: request parameters KServe's own clients may send; they are not ours to refuse
PROTOCOL_PARAMETERS = ("binary_data_output", "binary_data", "binary_data_size", "headers")


class BertClassifierModel(kserve.Model):
    """One classifier from a model directory laid out like an unpacked .mar."""

    def __init__(self, name: str, model_dir: str | Path, settings: HandlerSettings, batching: BatchingSettings, gpu_id: int | None = None):
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.settings = settings
        self.batching = batching
        self.gpu_id = gpu_id
        self.service: ClassifierService | None = None
        self.batcher: MicroBatcher | None = None
        self.metrics: PrometheusMetrics | None = None

    def load(self) -> bool:
        """Spec, tokenizer, the first backend that runs here (warmed up), and the batcher."""
        self.metrics = PrometheusMetrics(self.name)
        self.service, _ = load_service(self.model_dir, self.settings, self.gpu_id, self.metrics)
        batching = self.batching
        self.batcher = MicroBatcher(
            self.service.run, batching.max_batch_texts, batching.max_delay_ms, batching.max_in_flight,
            weight=lambda request: len(request.texts), max_queued=batching.max_queued_texts,
        )  # fmt: skip
        classifier = self.service.classifier
        logger.info("%s ready: %s, max_length=%d, labels=%s, %s", self.name, classifier.backend.describe(), classifier.max_length, classifier.labels, batching)
        self.ready = True
        return self.ready

    async def predict(self, payload: dict | InferRequest, headers: dict | None = None) -> dict | InferResponse:
        """Decode, batch with whatever else is queued (the service checks each request against the model),
        answer; a rejection is raised for the server to map. A request that does not decode is counted here;
        the service counts the ones it refuses."""
        v2 = isinstance(payload, InferRequest)
        try:
            requests = [v2_request(payload, self.settings.max_texts_per_request)] if v2 else v1_requests(payload, self.settings.max_texts_per_request)
        except RequestRejected:
            self.metrics.rejected.labels(self.name, self.service.backend_name).inc()
            raise
        with self.metrics.in_flight_requests.track_inprogress():  # queued for a batch, then computing
            results = [unwrapped(result) for result in await self.batcher.submit(requests)]
        if v2:
            return v2_response(self.name, payload.id, self.service, results[0], binary=payload.from_grpc)
        return {"predictions": [self.service.json_answers(result) for result in results]}

    def stop(self):
        """KServe's shutdown hook: refuse new batches and release the backend."""
        if self.service is not None:
            self.service.close()
        super().stop()

    def get_input_types(self) -> list[dict]:
        inputs = [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]}]
        if self.service and self.service.classifier.spec.text_pair:
            inputs.append({"name": PAIR_INPUT, "datatype": "BYTES", "shape": [-1]})
        return inputs

    def get_output_types(self) -> list[dict]:
        labels = len(self.service.classifier.labels) if self.service else -1
        if self.service and self.service.classifier.spec.regression:
            return [
                {"name": "score", "datatype": "FP32", "shape": [-1]},
                {"name": "truncated", "datatype": "BOOL", "shape": [-1]},
                {"name": "tokens", "datatype": "INT32", "shape": [-1]},
            ]
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, labels]},
            {"name": "truncated", "datatype": "BOOL", "shape": [-1]},
            {"name": "tokens", "datatype": "INT32", "shape": [-1]},
        ]


def unwrapped(result: Answered | RequestRejected) -> Answered:
    """The answer, or the rejection raised (a request the service refused after batching)."""
    if isinstance(result, RequestRejected):
        raise result
    return result


def v1_requests(payload, max_texts: int) -> list[ParsedRequest]:
    """The instances of a v1 body, each decoded like a TorchServe body holding one text:
    {"instances": ["text", {"text": "text", "top_k": 2}, ...]}."""
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput('v1 body must be {"instances": [...]}: a list of texts or {"text": ...} objects')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f'"instances" must be a list, got {type(instances).__name__}')
    checked_count(len(instances), max_texts)
    requests = []
    for index, instance in enumerate(instances):
        if not isinstance(instance, (str, dict)):  # the message a TorchServe list of texts gets
            raise InvalidInput(f"text at index {index} must be a string, got {type(instance).__name__}")
        try:
            request = texts_from_value(instance, max_texts)
        except RequestRejected as rejection:
            raise type(rejection)(f"instances[{index}]: {rejection.message}") from None
        if request.wants_list and not request.rerank:
            raise InvalidInput(f'instances[{index}]: one text per instance (send each text as its own instance), got a list')
        requests.append(request)
    checked_count(sum(len(request.texts) for request in requests), max_texts)  # reranking instances hold many texts
    return requests


def v2_request(request: InferRequest, max_texts: int) -> ParsedRequest:
    """An Open Inference Protocol request as one decoded request: the BYTES input "text" [n] (with "text_pair"
    [n] for pairs, or "query" [1] for reranking) and the options from the request's parameters, checked like
    a TorchServe body."""
    by_name: dict[str, list] = {}
    shapes: dict[str, list] = {}
    for item in request.inputs:
        if item.name not in V2_INPUTS or item.name in by_name:
            raise InvalidInput(
                f'send one input named "{TEXT_INPUT}" (datatype BYTES; and "{PAIR_INPUT}" for a pair model, or "{QUERY_INPUT}" to rerank); '
                f"got inputs {[item.name for item in request.inputs]}"
            )
        by_name[item.name] = decoded_texts(item)
        shapes[item.name] = list(item.shape)
    if TEXT_INPUT not in by_name:
        raise InvalidInput(f'send one input named "{TEXT_INPUT}" (datatype BYTES); got inputs {[item.name for item in request.inputs]}')
    parameters = parameter_values(request.parameters)
    unknown = sorted(set(parameters) - set(OPTION_FIELDS) - set(PROTOCOL_PARAMETERS))
    if unknown:
        raise InvalidInput(f"unknown fields {unknown[:10]} in the request's parameters; known: {', '.join(OPTION_FIELDS)}")
    texts = by_name[TEXT_INPUT]
    if QUERY_INPUT in by_name:
        if PAIR_INPUT in by_name or len(by_name[QUERY_INPUT]) != 1:
            raise InvalidInput(f'a reranking request has one "{QUERY_INPUT}" [1] and the passages in "{TEXT_INPUT}" [n], without "{PAIR_INPUT}"')
        options = {key: value for key, value in parameters.items() if key in OPTION_FIELDS}
        return texts_from_value({"query": by_name[QUERY_INPUT][0], "texts": texts, **options}, max_texts)
    if PAIR_INPUT in by_name:
        if len(by_name[PAIR_INPUT]) != len(texts) or shapes[PAIR_INPUT] != shapes[TEXT_INPUT]:
            raise InvalidInput(
                f'"{TEXT_INPUT}" has shape {shapes[TEXT_INPUT]} and "{PAIR_INPUT}" {shapes[PAIR_INPUT]}: send one text_pair per text, same shape'
            )
        parsed = texts_from_value({"text": texts, "text_pair": by_name[PAIR_INPUT]}, max_texts)
    else:
        parsed = texts_from_value(texts, max_texts)
    return ParsedRequest(parsed.texts, wants_list=True, options=response_options(parameters))


def decoded_texts(text_input: InferInput) -> list:
    """The values of a BYTES input as a flat list (JSON data, gRPC contents or raw binary alike), UTF-8 decoded."""
    if text_input.datatype != "BYTES":
        raise InvalidInput(f'input "{text_input.name}" must have datatype BYTES, got {text_input.datatype}')
    try:
        values = text_input.as_numpy().reshape(-1).tolist()
    except (ValueError, TypeError) as error:
        raise InvalidInput(f'input "{text_input.name}": data does not match its shape {text_input.shape} ({error})') from None
    texts = []
    for value in values:
        if isinstance(value, (bytes, bytearray)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError as err:
                raise InvalidInput(f"text is not valid UTF-8 (byte {err.start}); send UTF-8 text") from None
        texts.append(value)
    return texts


def parameter_values(parameters) -> dict:
    """Request parameters as plain values: a REST dict as it is, gRPC `InferParameter`s unwrapped."""
    return {key: grpc_parameter_value(key, value) if hasattr(value, "WhichOneof") else value for key, value in (parameters or {}).items()}


#: InferParameter fields of the OIP proto that KServe 0.21's copy lacks (tritonclient sends a float as
#: double_param): field number -> how to read its unknown-field value
EXTRA_PARAMETER_FIELDS = {4: lambda raw: struct.unpack("<d", struct.pack("<Q", raw))[0], 5: int}  # double_param, uint64_param


def grpc_parameter_value(key: str, parameter):
    """The value of one gRPC `InferParameter`: bool, int64 or string, or double / uint64 (read from the
    fields KServe's proto does not declare), never silently dropped."""
    choice = parameter.WhichOneof("parameter_choice")
    if choice:
        return getattr(parameter, choice)
    for field in UnknownFieldSet(parameter):
        if field.field_number in EXTRA_PARAMETER_FIELDS:
            return EXTRA_PARAMETER_FIELDS[field.field_number](field.data)
    raise InvalidInput(f"parameter {key!r} has no value this server can read: send a bool, an integer, a double or a string")


def v2_response(model_name: str, request_id: str | None, service: ClassifierService, answered: Answered, binary: bool = False) -> InferResponse:
    """A complete classification as v2 outputs, from the predictions themselves (see the module docstring).
    `binary`: every output in raw_output_contents, as Triton answers over gRPC (what tritonclient reads)."""
    classifier = service.classifier
    labels = classifier.labels
    predictions = answered.predictions
    options = answered.request.options
    count = len(predictions)
    parameters = {"backend": service.backend_name}
    if answered.request.rerank:
        results = classifier.rerank_answer(predictions, answered.request)
        outputs = [
            InferOutput("index", [len(results)], "INT32", [result["index"] for result in results]),
            InferOutput("score", [len(results)], "FP32", [classifier.relevance(predictions[result["index"]]) for result in results]),
            InferOutput("truncated", [len(results)], "BOOL", [result["truncated"] for result in results]),
        ]
        return InferResponse(request_id or "", model_name, outputs, parameters=parameters, use_binary_outputs=binary)
    reading = [
        InferOutput("truncated", [count], "BOOL", [prediction.truncated for prediction in predictions]),
        InferOutput("tokens", [count], "INT32", [prediction.tokens for prediction in predictions]),
    ]
    if classifier.truncation == "chunks":
        reading.append(InferOutput("chunks", [count], "INT32", [prediction.windows for prediction in predictions]))
    if classifier.spec.text_pair:  # as the JSON answers' pair_tokens and truncated_side ("" when nothing was cut)
        reading.append(InferOutput("pair_tokens", [count, 2], "INT32", [n for prediction in predictions for n in prediction.pair_tokens]))
        reading.append(InferOutput("truncated_side", [count], "BYTES", [prediction.truncated_side or "" for prediction in predictions]))
    if classifier.spec.regression:
        outputs = [InferOutput("score", [count], "FP32", [float(prediction.logits[0]) for prediction in predictions]), *reading]
        if options.return_logits:
            outputs.append(InferOutput("logits", [count, 1], "FP32", [float(prediction.logits[0]) for prediction in predictions], parameters={"labels": json.dumps(labels)}))
        return InferResponse(request_id or "", model_name, outputs, parameters=parameters, use_binary_outputs=binary)
    # ordered and thresholded in float64, as the JSON answers are; sent as float32
    probabilities = np.array([prediction.probabilities for prediction in predictions], dtype=np.float64).reshape(count, len(labels))
    best = probabilities.argmax(axis=1)
    label_names = {"labels": json.dumps(labels)}
    outputs = [
        InferOutput("label", [count], "BYTES", [labels[i] for i in best]),
        InferOutput("score", [count], "FP32", probabilities[np.arange(count), best].astype(np.float32).tolist()),
        InferOutput("probabilities", [count, len(labels)], "FP32", probabilities.astype(np.float32).reshape(-1).tolist(), parameters=label_names),
        *reading,
    ]
    if options.top_k:
        k = min(options.top_k, len(labels))
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        outputs.append(InferOutput("top_k_labels", [count, k], "BYTES", [labels[i] for row in order for i in row]))
        outputs.append(InferOutput("top_k_scores", [count, k], "FP32", np.take_along_axis(probabilities, order, axis=1).astype(np.float32).reshape(-1).tolist()))
    if options.return_logits:
        logits = np.array([prediction.logits for prediction in predictions], dtype=np.float32).reshape(count, len(labels))
        outputs.append(InferOutput("logits", [count, len(labels)], "FP32", logits.reshape(-1).tolist(), parameters=label_names))
    if classifier.spec.multi_label:
        threshold = classifier.threshold_for(options)
        outputs.append(InferOutput("predicted", [count, len(labels)], "BOOL", (probabilities >= threshold).reshape(-1).tolist(),
                                   parameters={**label_names, "threshold": str(threshold)}))  # fmt: skip
    return InferResponse(request_id or "", model_name, outputs, parameters=parameters, use_binary_outputs=binary)
