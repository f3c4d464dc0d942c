"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time

import torch


def full_batch(batch: int, length: int) -> dict[str, torch.Tensor]:
    """Random token ids, no padding: the synthetic (batch x length) input of the grid benchmarks."""
    ids = torch.randint(1000, 20000, (batch, length))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


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
