"""Sentence-pair and regression training: the CSV reader, float labels, the regression metrics, tiny training
runs (pair classifiers of two families, regression on single texts and on pairs) and the derived task builders."""

import csv
import json
import math
import random
from collections import Counter

import pytest

from handler.errors import DataError
from handler.spec import TEXT_PAIR_CONFIG_KEY, ModelSpec
from harness.models import byte_level_tokenizer, random_family_checkpoint
from training import derived_tasks
from training.data import (
    default_backbone_dir,
    default_corpus_path,
    float_labels,
    read_corpus,
    read_corpus_records,
    read_labelled_csv,
    read_labelled_examples,
    split_of,
)
from training.metrics import average_ranks, pearson, regression_scores
from training.train import fine_tune


def write_csv(path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


# --- the reader -----------------------------------------------------------------------------------------


def test_pair_csv_reads_both_texts_and_the_line_of_each_row(tmp_path):
    path = write_csv(tmp_path / "pairs.csv", ("label", "txt", "txt_pair"),
                     [("same", "a cat", "a kitten"), ("different", "two\nlines", "a dog"), ("same", " spaced ", "x")])  # fmt: skip
    examples = read_labelled_examples(path)
    assert examples.labels == ["same", "different", "same"]
    assert examples.texts == ["a cat", "two\nlines", "spaced"]
    assert examples.pairs == ["a kitten", "a dog", "x"]
    assert examples.text_pair
    assert examples.lines == [2, 3, 5]  # the second row's quoted text spans two lines
    assert examples.where(2) == f"{path}:5"
    assert read_labelled_csv(path) == (examples.labels, examples.texts)  # the old shorthand still works


def test_single_text_csv_has_no_pairs(tmp_path):
    examples = read_labelled_examples(write_csv(tmp_path / "one.csv", ("label", "txt"), [("1", "good")]))
    assert examples.pairs is None and not examples.text_pair


def test_an_empty_second_text_is_refused_with_its_line(tmp_path):
    path = write_csv(tmp_path / "pairs.csv", ("label", "txt", "txt_pair"), [("same", "a", "b"), ("same", "c", "  ")])
    with pytest.raises(DataError, match=r"pairs\.csv:3: empty txt_pair.*drop the column"):
        read_labelled_examples(path)
    with pytest.raises(DataError, match="label,txt,txt_pair"):
        read_labelled_examples(write_csv(tmp_path / "bad.csv", ("label", "text_a", "text_b"), [("1", "a", "b")]))


def test_float_labels_and_their_errors(tmp_path):
    good = read_labelled_examples(write_csv(tmp_path / "good.csv", ("label", "txt"), [("3.8", "a"), ("0", "b"), ("-1e-1", "c")]))
    assert float_labels(good) == [3.8, 0.0, -0.1]
    for bad in ("positive", "nan", "inf"):
        examples = read_labelled_examples(write_csv(tmp_path / "bad.csv", ("label", "txt"), [("1.5", "a"), (bad, "b")]))
        with pytest.raises(DataError, match=rf"bad\.csv:3: label '{bad}' is not a finite number.*single_label_classification"):
            float_labels(examples)


# --- regression metrics ---------------------------------------------------------------------------------


def test_pearson_and_spearman_by_hand():
    x, y = [1, 2, 3, 4, 5], [2, 4, 5, 4, 5]
    assert average_ranks(y).tolist() == [1, 2.5, 4.5, 2.5, 4.5]  # ties share their average rank
    scores = regression_scores(x, y)
    assert scores["pearson"] == pytest.approx(6 / math.sqrt(60))  # sum dx*dy = 6, sum dx^2 = 10, sum dy^2 = 6
    assert scores["spearman"] == pytest.approx(7 / math.sqrt(90))  # on the ranks: 7, 10, 9
    assert scores["mse"] == pytest.approx((1 + 4 + 4 + 0 + 0) / 5)
    assert regression_scores([1, 2, 3], [30, 20, 10])["spearman"] == pytest.approx(-1)
    assert math.isnan(pearson([1, 2, 3], [5, 5, 5]))  # undefined for a constant


def test_metrics_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    gold = [rng.choice([0.25, 0.5, 0.75, 1.0]) for _ in range(200)]  # many ties, as en-confidence has
    predicted = [g + rng.gauss(0, 0.3) for g in gold]
    scores = regression_scores(gold, predicted)
    assert scores["pearson"] == pytest.approx(stats.pearsonr(gold, predicted)[0], abs=1e-12)
    assert scores["spearman"] == pytest.approx(stats.spearmanr(gold, predicted)[0], abs=1e-12)
    assert average_ranks(gold).tolist() == stats.rankdata(gold).tolist()


# --- tiny training runs ---------------------------------------------------------------------------------

PAIR_ROWS = [("same", "great value, would buy again", "the staff were lovely"), ("different", "broken on arrival", "lovely room, spotless"),
             ("same", "worst delivery ever", "refund please, it broke"), ("different", "would buy again", "never again, awful")] * 6  # fmt: skip


def pair_files(tmp_path, rows=PAIR_ROWS, header=("label", "txt", "txt_pair")):
    return [write_csv(tmp_path / f"{split}.csv", header, rows) for split in ("train", "dev", "test")]


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_tiny_pair_classifier_saves_text_pair_and_reports_classification_metrics(tmp_path, family):
    tokenizer = byte_level_tokenizer() if family == "roberta" else None  # RoBERTa's <s> A </s></s> B </s> framing
    backbone = random_family_checkpoint(family, tmp_path / "backbone", default_backbone_dir() if tokenizer is None else None,
                                        labels=["different", "same"], tokenizer=tokenizer)  # fmt: skip
    train, dev, test = pair_files(tmp_path)
    report = fine_tune(backbone, train, dev, test, tmp_path / "out", steps=3, batch_size=8, max_length=32)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config[TEXT_PAIR_CONFIG_KEY] is True and config["problem_type"] == "single_label_classification"
    assert config["id2label"] == {"0": "different", "1": "same"}
    assert report["text_pair"] is True and report["problem_type"] == "single_label_classification"
    assert set(report["test"]) == {"examples", "accuracy", "macro_precision", "macro_recall", "macro_f1"}
    assert report["test"]["examples"] == len(PAIR_ROWS)
    assert ModelSpec.from_checkpoint(tmp_path / "out").text_pair


@pytest.mark.parametrize("text_pair", [False, True])
def test_tiny_regression_saves_one_score_output_and_reports_correlations(tmp_path, text_pair):
    backbone = random_family_checkpoint("bert", tmp_path / "backbone", default_backbone_dir(), labels=["score"], problem_type="regression")
    rows = [(f"{0.1 * (i % 10):.1f}", *row[1:]) for i, row in enumerate(PAIR_ROWS)]
    header = ("label", "txt", "txt_pair")
    if not text_pair:
        rows, header = [row[:2] for row in rows], header[:2]
    train, dev, test = pair_files(tmp_path, rows, header)
    report = fine_tune(backbone, train, dev, test, tmp_path / "out", steps=3, batch_size=8, max_length=32, problem_type="regression")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "score"}
    assert config.get(TEXT_PAIR_CONFIG_KEY, False) is text_pair
    assert (TEXT_PAIR_CONFIG_KEY in config) is text_pair  # a single-text model's config.json is as before
    assert report["problem_type"] == "regression" and report["text_pair"] is text_pair and report["labels"] == ["score"]
    assert set(report["test"]) == {"examples", "pearson", "spearman", "mse"}
    assert all(value is None or isinstance(value, float) for key, value in report["test"].items() if key != "examples")
    spec = ModelSpec.from_checkpoint(tmp_path / "out")
    assert spec.regression and spec.text_pair is text_pair


def test_splits_must_agree_and_labels_are_checked_before_training(tmp_path):
    backbone = tmp_path / "not-read"  # every error below comes before the backbone is loaded
    pairs = write_csv(tmp_path / "pairs.csv", ("label", "txt", "txt_pair"), [("1.0", "a", "b")])
    single = write_csv(tmp_path / "single.csv", ("label", "txt"), [("1.0", "a"), ("2.5", "b")])
    with pytest.raises(DataError, match="is a sentence-pair file .* but dev .* is a single-text file"):
        fine_tune(backbone, pairs, single, pairs, tmp_path / "out")
    one = write_csv(tmp_path / "one.csv", ("label", "txt"), [("1.0", "a")])
    with pytest.raises(DataError, match=r"\['2.5'\] that train does not have \(.*--problem-type regression"):
        fine_tune(backbone, one, one, single, tmp_path / "out")  # 2.5 is not a train label
    bad = write_csv(tmp_path / "bad.csv", ("label", "txt"), [("0.5", "a"), ("high", "b")])
    with pytest.raises(DataError, match=r"bad\.csv:3: label 'high'"):
        fine_tune(backbone, single, single, bad, tmp_path / "out", problem_type="regression")
    with pytest.raises(DataError, match="problem_type must be one of"):
        fine_tune(backbone, single, single, single, tmp_path / "out", problem_type="multi_label_classification")


# --- derived tasks --------------------------------------------------------------------------------------


def test_polarity_pairs_are_balanced_use_each_text_once_and_are_seeded():
    rows = [("negative", f"neg {i}") for i in range(60)] + [("positive", f"pos {i}") for i in range(41)]
    label_of = {text: label for label, text in rows}
    pairs = derived_tasks.polarity_pairs(rows, random.Random(1))
    kinds = Counter((label, label_of[a], label_of[b]) for label, a, b in pairs)
    assert kinds["same", "negative", "negative"] + kinds["same", "positive", "positive"] == len(pairs) // 2
    assert kinds["different", "negative", "positive"] + kinds["different", "positive", "negative"] == len(pairs) // 2
    assert set(kinds) == {("same", "negative", "negative"), ("same", "positive", "positive"), ("different", "negative", "positive"), ("different", "positive", "negative")}
    texts = [text for _, a, b in pairs for text in (a, b)]
    assert len(texts) == len(set(texts))  # each text at most once
    assert sum(label_of[text] == "positive" for text in texts) >= 41 - 3  # until the smaller label runs out (< 2 left, a last odd pair dropped)
    assert pairs == derived_tasks.polarity_pairs(rows, random.Random(1))
    assert pairs != derived_tasks.polarity_pairs(rows, random.Random(2))


def test_one_text_alone_says_nothing_about_the_answer():
    rows = [(label, f"{label} {i}") for label in ("a", "b", "c") for i in range(3000)]
    pairs = derived_tasks.polarity_pairs(rows, random.Random(0))
    for first_label in "abc":
        answers = [label for label, a, _ in pairs if a.startswith(first_label)]
        assert abs(answers.count("same") / len(answers) - 0.5) < 0.05


def test_same_polarity_pairs_stay_within_one_split_of_the_real_corpus():
    rows = [row for row in read_corpus(default_corpus_path())[::10] if row[0] in derived_tasks.POLARITIES]  # across the sources
    splits = derived_tasks.same_polarity_splits(rows)
    assert splits == derived_tasks.same_polarity_splits(rows)
    for split, pairs in splits.items():
        assert pairs and all(split_of(a) == split_of(b) == split for _, a, b in pairs)
        assert [p[0] for p in pairs].count("same") * 2 == len(pairs)
    assert len(splits["train"]) > 5 * len(splits["test"])


def test_confidence_rows_are_scores_of_their_split():
    records = read_corpus_records(default_corpus_path())[::10]
    splits = derived_tasks.confidence_splits(records)
    values = [float(label) for rows in splits.values() for label, _ in rows]
    assert len(values) == sum(1 for _, confidence, _ in records if confidence)
    assert 0.25 < min(values) and max(values) == 1.0
    assert all(split_of(text) == split for split, rows in splits.items() for _, text in rows)


def test_written_task_reads_back_as_a_pair_file(tmp_path, monkeypatch):
    monkeypatch.setattr(derived_tasks, "read_corpus", lambda path: read_corpus(path)[::50])
    paths = derived_tasks.write_task("en-same-polarity", tmp_path)
    examples = read_labelled_examples(paths["train"])
    assert examples.text_pair and set(examples.labels) == {"same", "different"}
    assert derived_tasks.baseline(paths, "single_label_classification")["predict_majority"] in {"same", "different"}
    assert derived_tasks.write_task("en-same-polarity", tmp_path / "again")["train"].read_bytes() == paths["train"].read_bytes()


def test_record_keeps_the_other_tasks(tmp_path):
    results = tmp_path / "results.json"
    derived_tasks.record({"task": "b", "x": 1}, results)
    derived_tasks.record({"task": "a", "x": 2}, results)
    derived_tasks.record({"task": "b", "x": 3}, results)
    assert json.loads(results.read_text()) == {"a": {"task": "a", "x": 2}, "b": {"task": "b", "x": 3}}
