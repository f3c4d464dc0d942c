"""Truncation policies (which tokens a long text keeps) and per-request response options, as pure logic."""

from __future__ import annotations

import numpy as np
import pytest

from handler.classifier import TextPrediction
from handler.errors import InvalidInput
from handler.http_status import http_status
from handler.payload import ParsedRequest, ResponseOptions, texts_from_value
from handler.settings import HandlerSettings
from handler.errors import SettingsError
from handler.tokenizer import clipped, content_windows

TOKENS = list(range(100, 120))  # a text of 20 content tokens


def test_short_texts_are_never_cut_under_any_policy():
    for policy in ("head", "tail", "head+tail", "chunks"):
        assert content_windows(TOKENS, 20, policy, 4) == ([TOKENS], False)


def test_head_tail_and_head_plus_tail_keep_the_documented_tokens():
    assert content_windows(TOKENS, 8, "head") == ([TOKENS[:8]], True)
    assert content_windows(TOKENS, 8, "tail") == ([TOKENS[-8:]], True)
    assert content_windows(TOKENS, 8, "head+tail") == ([TOKENS[:2] + TOKENS[-6:]], True)  # a quarter from the head


def test_chunks_cover_the_text_with_overlapping_windows_up_to_the_limit():
    windows, cut = content_windows(TOKENS, 8, "chunks", 8)
    assert not cut and all(len(window) == 8 for window in windows)
    assert windows[0] == TOKENS[:8] and windows[-1] == TOKENS[-8:]
    assert windows[1][:2] == windows[0][-2:]  # consecutive windows overlap by a quarter
    assert set().union(*windows) == set(TOKENS)
    limited, cut = content_windows(TOKENS, 8, "chunks", 2)
    assert cut and limited == windows[:2]


def test_character_clipping_keeps_the_ends_the_policy_reads():
    text = "a" * 50 + "b" * 50
    assert clipped(text, 10, "head") == "a" * 10 and clipped(text, 10, "tail") == "b" * 10
    assert clipped(text, 10, "head+tail") == "a" * 10 + " " + "b" * 10


def test_truncation_setting_is_checked():
    with pytest.raises(SettingsError, match="truncation must be one of"):
        HandlerSettings(truncation="middle")
    assert HandlerSettings.from_model_yaml({"handler": {"truncation": "chunks", "max_chunks": 4}}).max_chunks == 4


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"top_k": 0}, "top_k must be a positive integer"),
        ({"top_k": True}, "top_k must be a positive integer"),
        ({"return_logits": "yes"}, "return_logits must be true or false"),
        ({"threshold": 1.5}, "threshold must be a number from 0 to 1"),
        ({"topk": 2}, "unknown fields \\['topk'\\]"),
    ],
)
def test_bad_response_options_are_400_errors_naming_the_field(fields, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        texts_from_value({"text": "hello", **fields})
    assert http_status(caught.value) == 400


def test_response_options_are_parsed_with_the_texts():
    parsed = texts_from_value({"text": ["a", "b"], "top_k": 2, "return_logits": True, "threshold": 0.25})
    assert parsed.texts == ["a", "b"] and parsed.options == ResponseOptions(top_k=2, return_logits=True, threshold=0.25)


def classifier_for(tiny_checkpoint, multi_label: bool, truncation: str = "head"):
    """A real TextClassifier over the tiny tokenizer and `_SumBackend`, labels a, b, c."""
    from handler.classifier import TextClassifier
    from handler.spec import ModelSpec
    from handler.tokenizer import FastTokenizer

    problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    spec = ModelSpec(id2label={0: "a", 1: "b", 2: "c"}, max_length=16, problem_type=problem_type)
    return TextClassifier(FastTokenizer(tiny_checkpoint), _SumBackend(), spec, truncation=truncation, max_chunks=8)


def test_answers_carry_top_k_logits_and_multi_label_labels(tiny_checkpoint):
    prediction = TextPrediction(np.array([0.7, 0.2, 0.6]), np.array([0.85, -1.4, 0.4]), truncated=False, tokens=9, windows=1)
    single = classifier_for(tiny_checkpoint, multi_label=False).answer(prediction, ResponseOptions(top_k=2, return_logits=True))
    assert single["label"] == "a" and single["top_k"] == [{"label": "a", "score": 0.7}, {"label": "c", "score": 0.6}]
    assert single["logits"] == {"a": 0.85, "b": -1.4, "c": 0.4} and "labels" not in single
    multi = classifier_for(tiny_checkpoint, multi_label=True).answer(prediction, ResponseOptions(threshold=0.5))
    assert multi["labels"] == ["a", "c"] and multi["threshold"] == 0.5
    assert classifier_for(tiny_checkpoint, multi_label=True).answer(prediction)["labels"] == ["a", "c"]  # default threshold 0.5
    chunked = classifier_for(tiny_checkpoint, multi_label=False, truncation="chunks").answer(prediction)
    assert chunked["chunks"] == 1 and chunked["tokens"] == 9


def test_threshold_on_a_single_label_model_is_refused(tiny_checkpoint):
    with pytest.raises(InvalidInput, match="threshold applies to multi-label models only"):
        classifier_for(tiny_checkpoint, multi_label=False).check(ParsedRequest(["a text"], False, ResponseOptions(threshold=0.3)))
    classifier_for(tiny_checkpoint, multi_label=True).check(ParsedRequest(["a text"], False, ResponseOptions(threshold=0.3)))


class _SumBackend:
    """Logits from each window's ids (their sum, scaled), so that windows of one text differ."""

    chunk_size = 3
    max_sequence_length = None
    name = "sum"

    def infer(self, inputs):
        total = (inputs["input_ids"] * inputs["attention_mask"]).sum(axis=1, keepdims=True) / 1e5
        return np.concatenate([total, -total, np.zeros_like(total)], axis=1).astype(np.float32)


def test_chunked_texts_average_their_windows_probabilities_in_order(tiny_checkpoint):
    from handler.classifier import softmax
    from handler.tokenizer import FastTokenizer

    tokenizer = FastTokenizer(tiny_checkpoint)
    classifier = classifier_for(tiny_checkpoint, multi_label=False, truncation="chunks")
    texts = ["short one", " ".join(f"word{i}" for i in range(40)), "another short text"]
    predictions = classifier.predict(texts)
    encoded = tokenizer.encode_texts(texts, 16, "chunks", 8)
    for prediction, text in zip(predictions, encoded):
        window_logits = _SumBackend().infer({"input_ids": np.array([w + [0] * (16 - len(w)) for w in text.windows]),
                                             "attention_mask": np.array([[1] * len(w) + [0] * (16 - len(w)) for w in text.windows])})  # fmt: skip
        np.testing.assert_allclose(prediction.probabilities, softmax(window_logits).mean(axis=0), atol=1e-9)
        assert prediction.windows == len(text.windows) and prediction.tokens == text.tokens
    assert predictions[1].windows > 1 and predictions[0].windows == predictions[2].windows == 1


# ---- token-budget chunks (TextClassifier.chunk_plan) -------------------------------------------------


class SizedBackend:
    def __init__(self, chunk_size):
        self.chunk_size = chunk_size
        self.max_sequence_length = None


def planned(lengths, chunk_size=None, max_batch_tokens=None):
    from types import SimpleNamespace

    from handler.classifier import TextClassifier

    tokenizer = SimpleNamespace(pad_id=0, type_id=0)
    spec = SimpleNamespace(max_length=512, labels=["a", "b"], multi_label=False, regression=False, text_pair=False)
    classifier = TextClassifier(tokenizer, SizedBackend(chunk_size), spec, max_batch_tokens=max_batch_tokens)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [[lengths[i] for i in chunk] for chunk in classifier.chunk_plan([lengths[i] for i in order], order)]


def test_a_long_text_never_drags_a_chunk_of_short_ones_to_its_length():
    lengths = [20] * 63 + [128]
    assert planned(lengths) == [sorted(lengths)]  # no budget: one call padded to 128 (8,192 tokens)
    assert planned(lengths, max_batch_tokens=4096) == [[20] * 63, [128]]  # 1,260 + 128 tokens


def test_every_chunk_keeps_within_the_count_and_the_token_budget():
    import random

    rng = random.Random(3)
    for _ in range(200):
        lengths = [rng.randint(3, 300) for _ in range(rng.randint(1, 90))]
        budget, size = rng.choice([None, 256, 1000, 4096]), rng.choice([None, 8, 32])
        plan = planned(lengths, size, budget)
        assert sorted(length for chunk in plan for length in chunk) == sorted(lengths)  # every window once
        for chunk in plan:
            assert size is None or len(chunk) <= size
            assert budget is None or len(chunk) == 1 or len(chunk) * max(chunk) <= budget


def test_the_default_budget_never_splits_a_batch_of_64_at_max_length_128_but_isolates_a_512_token_window():
    from handler.settings import DEFAULT_MAX_BATCH_TOKENS, HandlerSettings

    assert HandlerSettings().max_batch_tokens == DEFAULT_MAX_BATCH_TOKENS == 8192
    assert planned([128] * 64, 128, DEFAULT_MAX_BATCH_TOKENS) == [[128] * 64]
    assert planned([40] * 63 + [512], 128, DEFAULT_MAX_BATCH_TOKENS) == [[40] * 63, [512]]
