"""CUDA graphs per shape bucket: which graph runs a batch, and one captured graph with its I/O buffers."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

#: the graph's forward: (input_ids, token_type_ids, attention_mask or None) -> logits, all on the device
ForwardLogits = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def bucket_of(value: int, buckets: tuple[int, ...]) -> int:
    """Smallest bucket that holds `value`."""
    for bucket in buckets:
        if value <= bucket:
            return bucket
    raise ValueError(f"{value} exceeds the largest bucket {buckets[-1]}")


def graph_key(attention_mask: np.ndarray, batch_buckets: tuple[int, ...], sequence_buckets: tuple[int, ...], unpadded_graphs: bool) -> tuple[int, int, bool]:
    """(batch bucket, sequence bucket, masked?) of the graph that runs this batch. The graph without
    attention mask is only for a batch that fills its bucket exactly and has no padding at all."""
    batch, length = attention_mask.shape
    shape = (bucket_of(batch, batch_buckets), bucket_of(length, sequence_buckets))
    masked = not (unpadded_graphs and shape == (batch, length) and bool(attention_mask.all()))
    return (*shape, masked)


class CapturedBatch:
    """One CUDA graph of `forward_logits` for a fixed (batch, sequence) shape, with static I/O buffers.

    The three inputs travel as one pinned int64 block [3, batch, sequence] (one host-to-device copy)
    and the logits become float32 inside the graph: a call is two copies and one replay.
    `masked=False` captures the model without attention mask: only for batches with no padding.
    """

    INPUT_ROWS = ("input_ids", "token_type_ids", "attention_mask")

    def __init__(self, forward_logits: ForwardLogits, shape: tuple[int, int], device: torch.device, pool, masked: bool = True):
        self.host = torch.zeros((len(self.INPUT_ROWS), *shape), dtype=torch.long).pin_memory()
        self.host[2, :, 0] = 1
        self.static = self.host.to(device)
        input_ids, token_type_ids, attention_mask = self.static.unbind(0)
        run = lambda: forward_logits(input_ids, token_type_ids, attention_mask if masked else None).float()  # noqa: E731
        with torch.inference_mode():
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    run()
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, pool=pool):
                self.logits = run()

    @classmethod
    def fill(cls, host: torch.Tensor, inputs: dict[str, np.ndarray], batch: int, length: int) -> None:
        """Write a [batch, length] batch into the [3, bucket batch, bucket sequence] block; the rest is
        padding (zeros), and padding rows attend to their first position so that no row is all-masked.
        Done through numpy views: about half the time of the same torch indexing on the H100 machine's
        host (0.09 vs 0.16 ms at 128x128, 0.03 vs 0.06 ms at 1x128), time the GPU spends waiting."""
        block = host.numpy()
        block[:, batch:] = 0
        block[:, :batch, length:] = 0
        for row, name in enumerate(cls.INPUT_ROWS):
            block[row, :batch, :length] = inputs[name]
        block[2, batch:, 0] = 1

    def run(self, inputs: dict[str, np.ndarray], batch: int, length: int) -> torch.Tensor:
        """Logits [batch, num_labels] (float32, CPU) of a batch no larger than the captured shape."""
        self.fill(self.host, inputs, batch, length)
        self.static.copy_(self.host, non_blocking=True)
        self.graph.replay()
        return self.logits[:batch].cpu()
