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


# ---- the prediction cache (handler/prediction_cache.py) -----------------------------------------------


class CountingClassifier:
    """Wraps a classifier and records the texts each `run` computed."""

    def __init__(self, classifier):
        self.classifier, self.computed = classifier, []

    def __getattr__(self, name):
        return getattr(self.classifier, name)

    def run(self, texts):
        self.computed.append(list(texts))
        return self.classifier.run(texts)


def test_a_cached_answer_equals_the_computed_one_for_every_option_set(reference_classifier):
    counting = CountingClassifier(reference_classifier)
    sink = RecordingSink()
    service = ClassifierService(counting, sink, cache_size=100)
    texts = ["a lovely quiet room", "cold food", "rude staff"]
    first = service.run([ParsedRequest(texts, wants_list=True)])[0]
    options = ResponseOptions(top_k=2, return_logits=True)
    again = service.run([ParsedRequest(texts, wants_list=True, options=options), ParsedRequest(["cold food"], wants_list=False)])
    assert counting.computed == [texts, []]  # the second batch computed nothing
    computed_alone = ClassifierService(reference_classifier, cache_size=0).run([ParsedRequest(texts, wants_list=True, options=options)])[0]
    assert service.json_answers(again[0]) == service.json_answers(computed_alone)
    assert service.json_answers(again[1]) == service.json_answers(first)[1]
    assert [(record.cache_hits, record.computed) for record in sink.records] == [(0, 3), (4, 0)]


def test_a_text_twice_in_one_batch_is_computed_once_and_the_cache_forgets_the_least_recently_used(reference_classifier):
    counting = CountingClassifier(reference_classifier)
    service = ClassifierService(counting, cache_size=2)
    service.run([ParsedRequest(["one", "two", "one"], wants_list=True)])
    service.run([ParsedRequest(["one"], wants_list=False)])  # a hit: "one" is now the most recent
    service.run([ParsedRequest(["three"], wants_list=False)])  # evicts "two"
    service.run([ParsedRequest(["one", "two"], wants_list=True)])
    assert counting.computed == [["one", "two"], [], ["three"], ["two"]]
    assert len(service.cache) == 2


def test_cache_size_zero_computes_every_batch(reference_classifier):
    counting = CountingClassifier(reference_classifier)
    service = ClassifierService(counting, cache_size=0)
    for _ in range(2):
        service.run([ParsedRequest(["same text"], wants_list=False)])
    assert counting.computed == [["same text"], ["same text"]] and len(service.cache) == 0


def test_the_cache_is_safe_from_several_threads(reference_classifier):
    from concurrent.futures import ThreadPoolExecutor

    service = ClassifierService(reference_classifier, cache_size=50)
    texts = [f"review number {i} was {'good' if i % 2 else 'bad'}" for i in range(120)]
    expected = {text: service.json_answers(service.run([ParsedRequest([text], wants_list=False)])[0]) for text in texts}
    batches = [texts[i::7] for i in range(7)] * 6

    def answer(batch):
        results = service.run([ParsedRequest([text], wants_list=False) for text in batch])
        return [(text, service.json_answers(result)) for text, result in zip(batch, results)]

    with ThreadPoolExecutor(6) as pool:
        answered = [pair for batch in pool.map(answer, batches) for pair in batch]
    worst = max(abs(got["probabilities"][label] - expected[text]["probabilities"][label]) for text, got in answered for label in got["probabilities"])
    assert worst <= 1e-4 and all(got["label"] == expected[text]["label"] for text, got in answered)
    assert len(service.cache) == 50


def test_cache_size_is_a_checked_setting():
    from handler.errors import SettingsError
    from handler.settings import HandlerSettings

    assert HandlerSettings.from_model_yaml({"handler": {"response_cache_size": 0}}).response_cache_size == 0
    with pytest.raises(SettingsError, match="response_cache_size must be a whole number >= 0"):
        HandlerSettings.from_model_yaml({"handler": {"response_cache_size": -1}})
