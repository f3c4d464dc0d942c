"""Pairs, reranking and regression in one process: the pair encoding equals the tokenizers library's (BERT and
RoBERTa framing, all three cut strategies), requests decode into the right inputs or name the bad field,
pair and regression predictions equal transformers' model, and a pair's answer does not depend on its batch."""

from __future__ import annotations

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from handler.errors import InvalidInput, SettingsError
from handler.payload import ParsedRequest, texts_from_value
from handler.service import ClassifierService
from handler.spec import ModelSpec
from handler.tokenizer import FastTokenizer, pair_lengths
from harness.models import byte_level_tokenizer, model_dir_like_mar, random_family_checkpoint, torch_cpu_classifier
from training.data import default_backbone_dir

WORDS = "the quick brown fox jumps over lazy dog refund please great value 酒店 café".split()


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory) -> dict:
    """{"bert": MiniLM's tokenizer folder, "roberta": a byte-level BPE tokenizer folder}."""
    roberta = tmp_path_factory.mktemp("roberta_tokenizer")
    byte_level_tokenizer().save_pretrained(roberta)
    return {"bert": default_backbone_dir(), "roberta": roberta}


def library(directory, max_length: int, strategy: str):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length, strategy=strategy)
    return tokenizer


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
def test_pair_ids_and_token_types_equal_the_librarys_for_every_cut(tokenizer_dirs, family, strategy):
    ours = FastTokenizer(tokenizer_dirs[family])
    rng = np.random.default_rng(7)
    compared = 0
    for max_length in (12, 33, 64):
        reference = library(tokenizer_dirs[family], max_length, strategy)
        for _ in range(150):
            first, second = (" ".join(rng.choice(WORDS, size=rng.integers(1, 40))) for _ in range(2))
            got = ours.encode_texts([(first, second)], max_length, "head", pair_policy=strategy)[0]
            try:
                expected = reference.encode(first, second)
            except Exception:  # only_first / only_second: the library refuses when that text cannot give up enough; we cut longest_first
                assert len(got.windows[0]) == max_length and got.truncated_side in ("both", "text" if strategy == "only_second" else "text_pair")
                continue
            assert got.windows == [expected.ids] and got.type_windows == [expected.type_ids], (first, second, max_length)
            compared += 1
    assert compared > 60
    if family == "bert":
        assert ours.pair_frame.second_type == 1 and ours.pair_frame.first_type == 0
    else:
        assert ours.pair_frame.middle == [2, 2] and ours.pair_frame.second_type == 0


@hypothesis.given(st.integers(0, 300), st.integers(0, 300), st.integers(1, 200), st.sampled_from(["longest_first", "only_first", "only_second"]))
def test_pair_lengths_always_fit_and_cut_nothing_that_fits(first, second, budget, strategy):
    kept_first, kept_second = pair_lengths(first, second, budget, strategy)
    assert 0 <= kept_first <= first and 0 <= kept_second <= second
    if first + second <= budget:
        assert (kept_first, kept_second) == (first, second)
    else:
        assert kept_first + kept_second == budget or (kept_first + kept_second < budget and (kept_first, kept_second) != (first, second))
        assert kept_first + kept_second <= budget


@pytest.mark.parametrize(
    "value, inputs, wants_list",
    [
        ({"text": "a", "text_pair": "b"}, [("a", "b")], False),
        ({"text": ["a", "c"], "text_pair": ["b", "d"], "top_k": 1}, [("a", "b"), ("c", "d")], True),
        ([{"text": "a", "text_pair": "b"}, "c"], [("a", "b"), "c"], True),
        ({"query": "q", "texts": ["p1", "p2"]}, [("q", "p1"), ("q", "p2")], True),
    ],
)
def test_pair_and_rerank_payloads_decode_into_pairs(value, inputs, wants_list):
    request = texts_from_value(value)
    assert request.texts == inputs and request.wants_list is wants_list
    assert request.rerank is ("query" in value)


@pytest.mark.parametrize(
    "value, message",
    [
        ({"text": "a", "text_pair": ["b"]}, '"text" and "text_pair" must both be strings or both lists'),
        ({"text": ["a"], "text_pair": ["b", "c"]}, '"text" has 1 items and "text_pair" 2'),
        ([{"text": "a", "text_pair": "b", "top_k": 2}], "response options go on one object"),
        ({"query": "q"}, 'a reranking request has "query"'),
        ({"query": 3, "texts": ["a"]}, "query must be a string"),
        ({"query": "q", "texts": "a"}, '"texts" must be a list of strings'),
        ({"query": "q", "texts": ["a"], "threshold": 0.5}, "unknown fields ['threshold'] in the reranking request"),
        ({"query": "q", "texts": ["a"], "return_text": "yes"}, "return_text must be true or false"),
        ({"text": "a", "text_pair": 5}, "must both be strings"),
    ],
)
def test_bad_pair_and_rerank_payloads_name_the_field(value, message):
    with pytest.raises(InvalidInput) as raised:
        texts_from_value(value)
    assert message in raised.value.message


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """{name: (checkpoint, classifier on torch_cpu)} for a BERT pair model, a RoBERTa pair model and a regression model."""
    built = {}
    options = {
        "bert_pair": ("bert", dict(tokenizer_dir=default_backbone_dir(), labels=["different", "same"], text_pair=True)),
        "roberta_pair": ("roberta", dict(tokenizer=byte_level_tokenizer(), labels=["different", "same"], text_pair=True)),
        "regression": ("bert", dict(tokenizer_dir=default_backbone_dir(), labels=["score"], problem_type="regression")),
        "three_labels_pair": ("bert", dict(tokenizer_dir=default_backbone_dir(), labels=["a", "b", "c"], text_pair=True)),
    }
    for name, (family, kwargs) in options.items():
        root = tmp_path_factory.mktemp(name)
        checkpoint = random_family_checkpoint(family, root / "checkpoint", **kwargs)
        export_dir = root / "export"
        export_dir.mkdir()
        ModelSpec.from_checkpoint(checkpoint, 48).save(export_dir)
        built[name] = (checkpoint, torch_cpu_classifier(model_dir_like_mar(checkpoint, export_dir, root / "model_dir")))
    return built


def transformers_outputs(checkpoint, inputs) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, local_files_only=True).eval()
    if isinstance(inputs[0], tuple):
        encoded = tokenizer([a for a, _ in inputs], [b for _, b in inputs], truncation=True, max_length=48, padding=True, return_tensors="pt")
    else:
        encoded = tokenizer(inputs, truncation=True, max_length=48, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**encoded).logits.numpy()


PAIRS = [("great value", "would buy again"), ("broken on arrival", "refund please " * 30), ("the lazy dog", "the quick brown fox")]


@pytest.mark.parametrize("name", ["bert_pair", "roberta_pair"])
def test_pair_predictions_equal_transformers_and_do_not_depend_on_the_batch(models, name):
    checkpoint, classifier = models[name]
    expected = transformers_outputs(checkpoint, PAIRS)
    together = classifier.predict(PAIRS)
    for prediction, logits in zip(together, expected):
        assert np.abs(prediction.logits - logits).max() <= 1e-4
    for index, pair in enumerate(PAIRS):
        alone = classifier.predict([pair])[0]
        assert np.abs(alone.probabilities - together[index].probabilities).max() <= 1e-4
    assert together[1].truncated_side == "text_pair" and together[1].pair_tokens[1] > 48


def test_bert_pair_models_see_the_second_text_as_segment_b(models):
    _, classifier = models["bert_pair"]
    encoded = classifier.encode([PAIRS[0]])
    _, inputs = next(classifier.chunks(encoded))
    assert inputs["token_type_ids"].tolist() == [[0] * 4 + [1] * 4]  # [CLS] great value [SEP] | would buy again [SEP]


def test_regression_scores_are_the_raw_output_and_label_options_are_refused(models):
    checkpoint, classifier = models["regression"]
    texts = ["great value", "broken on arrival"]
    expected = transformers_outputs(checkpoint, texts)
    answers = classifier.classify(texts)
    assert [set(answer) for answer in answers] == [{"score", "truncated", "tokens"}] * 2
    assert max(abs(answer["score"] - logits[0]) for answer, logits in zip(answers, expected)) <= 1e-4
    for options in ({"top_k": 1}, {"threshold": 0.5}):
        with pytest.raises(InvalidInput, match="top_k does not apply to a regression model|threshold applies to multi-label models only"):
            classifier.check(texts_from_value({"text": "a", **options}))


def test_reranking_sorts_by_the_second_labels_probability_and_needs_a_one_score_pair_model(models):
    _, classifier = models["bert_pair"]
    service = ClassifierService(classifier, cache_size=0)
    request = texts_from_value({"query": "broken?", "texts": ["great value", "broken on arrival", "the lazy dog"], "top_k": 2})
    (answered,) = service.run([request])
    results = service.json_answers(answered)
    scores = [float(p.probabilities[1]) for p in classifier.predict(request.texts)]
    assert [result["index"] for result in results] == sorted(range(3), key=lambda i: -scores[i])[:2]
    assert all(set(result) == {"index", "score", "truncated", "backend"} for result in results)
    with pytest.raises(InvalidInput, match="reranking needs a model with one relevance score"):
        models["three_labels_pair"][1].check(request)
    with pytest.raises(InvalidInput, match="reranking needs a pair model"):
        models["regression"][1].check(request)


def test_the_cache_keeps_a_pair_apart_from_its_swap_and_from_its_first_text(models):
    _, classifier = models["bert_pair"]
    service = ClassifierService(classifier, cache_size=100)
    pairs = [("great value", "the lazy dog"), ("the lazy dog", "great value")]
    computed = classifier.predict(pairs)
    for _ in range(2):  # the second round comes from the cache
        (first,) = service.run([ParsedRequest(pairs, True)])
        assert [np.abs(a.probabilities - b.probabilities).max() for a, b in zip(first.predictions, computed)] == [0.0, 0.0]
    assert len(service.cache) == 2


def test_a_pair_model_refuses_truncation_policies_that_mean_nothing_for_two_texts(models):
    from handler.classifier import TextClassifier

    _, classifier = models["bert_pair"]
    with pytest.raises(SettingsError, match="use truncation head and choose which text is cut with pair_truncation"):
        TextClassifier(classifier.tokenizer, classifier.backend, classifier.spec, truncation="chunks")
