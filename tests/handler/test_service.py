"""The service core: one result or one rejection per request, in order; the rest of a batch answered;
one metrics record per batch; transport-neutral rejections mapped by each door's table."""

from __future__ import annotations

import pytest
from handler.errors import InvalidInput, ModelNotReady, Overloaded, TooManyTexts
from handler.http_status import error_body, http_status
from handler.metrics import BatchRecord, MetricsSink
from handler.payload import ParsedRequest, ResponseOptions, parse_request
from handler.service import Answered, ClassifierService


class RecordingSink(MetricsSink):
    def __init__(self):
        self.started, self.records = [], []

    def backend_started(self, backend):
        self.started.append(backend)

    def batch_done(self, record):
        self.records.append(record)


def test_bad_requests_get_their_rejection_in_place_and_the_rest_are_answered(reference_classifier):
    sink = RecordingSink()
    service = ClassifierService(reference_classifier, sink)
    batch = [
        parse_request({"body": "a lovely quiet room"}),
        InvalidInput("decoding failed"),  # what a door hands on for a request it could not decode
        ParsedRequest(["fine"], wants_list=False, options=ResponseOptions(threshold=0.3)),  # single-label model: refused here
        parse_request({"body": '{"text": ["cold food", "rude staff"], "top_k": 2}'}),
    ]
    results = service.run(batch)
    assert [type(result) for result in results] == [Answered, InvalidInput, InvalidInput, Answered]
    assert "threshold applies to multi-label models only" in results[2].message
    alone = reference_classifier.classify(["a lovely quiet room", "cold food", "rude staff"])
    assert service.json_answers(results[0]) == {**alone[0], "backend": "onnxruntime"}
    listed = service.json_answers(results[3])
    assert [answer["label"] for answer in listed] == [answer["label"] for answer in alone[1:]]
    assert all(len(answer["top_k"]) == 2 for answer in listed)
    assert sink.started == ["onnxruntime"]
    (record,) = sink.records
    assert isinstance(record, BatchRecord)
    assert (record.requests, record.rejected, record.texts) == (4, 2, 3) and record.tokens > 3 and record.total_ms >= record.infer_ms


def test_a_closed_service_refuses_with_model_not_ready(reference_classifier):
    service = ClassifierService(reference_classifier)
    service.ready = False  # what close() sets (close() would also release the shared fixture's backend)
    with pytest.raises(ModelNotReady, match="retry"):
        service.run([parse_request({"body": "hello"})])


@pytest.mark.parametrize(
    "rejection, status", [(InvalidInput("bad"), 400), (TooManyTexts("split it"), 413), (ModelNotReady("later"), 503), (Overloaded("later"), 503)]
)
def test_the_http_doors_map_each_rejection(rejection, status):
    assert http_status(rejection) == status and error_body(rejection) == {"error": rejection.message, "code": status}
