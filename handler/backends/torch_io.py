"""The numpy <-> torch boundary of the torch-based backends (zero-copy on the CPU)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch


def as_tensors(inputs: dict[str, np.ndarray], names: Iterable[str]) -> dict[str, torch.Tensor]:
    """CPU tensors sharing memory with the named numpy arrays."""
    return {name: torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in names}
