"""Pure helpers of the fine-tuning script and the default data split."""

import pytest

from handler.errors import DataError
from training.data import read_labelled_csv, split_of
from training.train import classification_scores, label_order


def test_numeric_labels_sort_numerically_and_names_alphabetically():
    assert label_order(["1", "-1", "0", "1"]) == ["-1", "0", "1"]
    assert label_order(["pos", "neg"]) == ["neg", "pos"]


def test_scores_macro_average():
    scores = classification_scores([0, 0, 1, 1], [0, 1, 1, 1], 2)
    assert scores["accuracy"] == 0.75
    assert scores["macro_precision"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert scores["macro_recall"] == pytest.approx((0.5 + 1.0) / 2)


def test_split_is_deterministic_and_roughly_proportional():
    texts = [f"text number {i}" for i in range(4000)]
    splits = [split_of(t) for t in texts]
    assert splits == [split_of(t) for t in texts]
    assert 0.07 < splits.count("test") / 4000 < 0.13
    assert 0.03 < splits.count("dev") / 4000 < 0.07


def test_csv_needs_label_and_txt_columns(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("label,txt\n-1,bad\n1,\"good, really\"\n", encoding="utf-8")
    assert read_labelled_csv(good) == (["-1", "1"], ["bad", "good, really"])
    bad = tmp_path / "bad.csv"
    bad.write_text("sentiment,text\nx,y\n", encoding="utf-8")
    with pytest.raises(DataError, match="label,txt"):
        read_labelled_csv(bad)
