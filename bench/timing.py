"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time

import numpy as np


def full_batch(batch: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids, no padding: the synthetic (batch x length) input of the grid benchmarks."""
    ids = np.random.default_rng(seed).integers(1000, 20000, (batch, length), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def median_wall_ms(call, iterations: int, warmup: int = 0) -> float:
    """Median wall-clock milliseconds of `call()` over `iterations` runs, after `warmup` untimed ones.
    For GPU work, `call` must wait for its result (e.g. return CPU tensors)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
