"""CUDA-graph glue that runs on the CPU: which graph a batch takes, and how its input block is filled."""

from __future__ import annotations

import numpy as np
import torch

from handler.backends.cuda_graphs import CapturedBatch, graph_key


def test_graph_choice_uses_the_unmasked_graph_only_for_a_full_unpadded_bucket():
    buckets = ((1, 2, 4), (16, 32))
    assert graph_key(np.ones((4, 32)), *buckets, unpadded_graphs=True) == (4, 32, False)
    assert graph_key(np.ones((3, 32)), *buckets, unpadded_graphs=True) == (4, 32, True)  # padding rows
    assert graph_key(np.ones((4, 20)), *buckets, unpadded_graphs=True) == (4, 32, True)  # padding columns
    with_padding = np.ones((4, 32))
    with_padding[2, 30:] = 0
    assert graph_key(with_padding, *buckets, unpadded_graphs=True) == (4, 32, True)
    assert graph_key(np.ones((4, 32)), *buckets, unpadded_graphs=False) == (4, 32, True)


def test_fill_pads_the_bucket_and_gives_padding_rows_one_token():
    host = torch.full((3, 4, 8), 7, dtype=torch.long)  # stale values from an earlier, larger batch
    inputs = {"input_ids": np.array([[5, 6, 9], [5, 8, 0]]), "token_type_ids": np.zeros((2, 3), dtype=np.int64),
              "attention_mask": np.array([[1, 1, 1], [1, 1, 0]])}  # fmt: skip
    CapturedBatch.fill(host, inputs, batch=2, length=3)
    ids, types, mask = host
    assert ids[:2, :3].tolist() == inputs["input_ids"].tolist() and ids[:, 3:].eq(0).all() and ids[2:].eq(0).all()
    assert types.eq(0).all()
    assert mask[:2, :3].tolist() == inputs["attention_mask"].tolist() and mask[:2, 3:].eq(0).all()
    assert mask[2:].tolist() == [[1, 0, 0, 0, 0, 0, 0, 0]] * 2
