"""Regression metrics, in numpy (no torch): what training reports and what the quantization budget of a
regression model is measured in (export/quantize.py)."""

from __future__ import annotations

import math

import numpy as np


def average_ranks(values) -> np.ndarray:
    """Ranks 1..n of values, tied values sharing the average of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks


def pearson(x, y) -> float:
    """Pearson correlation of two sequences (nan when either is constant)."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denominator if denominator else math.nan


def regression_scores(gold: list[float], predicted: list[float]) -> dict[str, float]:
    """Pearson and Spearman correlation (ties: average ranks) and mean squared error."""
    return {
        "pearson": pearson(gold, predicted),
        "spearman": pearson(average_ranks(gold), average_ranks(predicted)),
        "mse": float(np.mean((np.asarray(gold, dtype=np.float64) - np.asarray(predicted, dtype=np.float64)) ** 2)),
    }
