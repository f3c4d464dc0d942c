"""Two Triton kernels for FusedBertClassifier: LayerNorm, and embedding lookup + sum + LayerNorm.

Measured inside BERT-base at 128 x 128 tokens on an H100 (bench/gpu_kernel_probe.py --profile):
PyTorch's LayerNorm kernel took 36 µs per call on [16384, 768] fp16, this one 15 µs (25 calls
per forward); the embeddings took four kernels (two gathers, two adds, ~100 µs) before their
LayerNorm, one kernel here. Both are used for CUDA tensors when Triton is importable (it comes with
CUDA builds of PyTorch); everywhere else the same maths runs through `torch.nn.functional`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of PyTorch ship without Triton
    triton = None

#: elements each program normalizes (rows x padded columns), and warps per program
ELEMENTS_PER_PROGRAM = 4096
NUM_WARPS = 4

if triton is not None:

    @triton.jit
    def _normalize(x, mask, cols, col_ok, weight_ptr, bias_ptr, n_cols, eps):
        mean = tl.sum(x, axis=1) / n_cols
        centered = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=1) / n_cols + eps)
        weight = tl.load(weight_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        bias = tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        return centered * rstd[:, None] * weight[None, :] + bias[None, :]

    @triton.jit
    def _layer_norm_rows(x_ptr, weight_ptr, bias_ptr, out_ptr, n_rows, n_cols, eps, BLOCK_COLS: tl.constexpr, ROWS: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, BLOCK_COLS)
        col_ok = cols < n_cols
        mask = (rows < n_rows)[:, None] & col_ok[None, :]
        offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        normalized = _normalize(x, mask, cols, col_ok, weight_ptr, bias_ptr, n_cols, eps)
        tl.store(out_ptr + offsets, normalized.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _embed_layer_norm_rows(
        ids_ptr, types_ptr, word_ptr, position_ptr, type_ptr, weight_ptr, bias_ptr, out_ptr,
        n_rows, seq_len, n_cols, eps, BLOCK_COLS: tl.constexpr, ROWS: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        row_ok = rows < n_rows
        cols = tl.arange(0, BLOCK_COLS)
        col_ok = cols < n_cols
        mask = row_ok[:, None] & col_ok[None, :]
        ids = tl.load(ids_ptr + rows, mask=row_ok, other=0).to(tl.int64)
        types = tl.load(types_ptr + rows, mask=row_ok, other=0).to(tl.int64)
        positions = (rows % seq_len).to(tl.int64)
        x = tl.load(word_ptr + ids[:, None] * n_cols + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        x += tl.load(position_ptr + positions[:, None] * n_cols + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        x += tl.load(type_ptr + types[:, None] * n_cols + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        normalized = _normalize(x, mask, cols, col_ok, weight_ptr, bias_ptr, n_cols, eps)
        offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
        tl.store(out_ptr + offsets, normalized.to(out_ptr.dtype.element_ty), mask=mask)


def triton_available() -> bool:
    """True when Triton is importable (CUDA builds of PyTorch)."""
    return triton is not None


def _use_triton(tensor: torch.Tensor, use_triton: bool) -> bool:
    return use_triton and triton is not None and tensor.is_cuda


def _launch(kernel, n_rows: int, n_cols: int, *args) -> None:
    block_cols = triton.next_power_of_2(n_cols)
    rows_per_program = max(1, ELEMENTS_PER_PROGRAM // block_cols)
    grid = (triton.cdiv(n_rows, rows_per_program),)
    kernel[grid](*args, BLOCK_COLS=block_cols, ROWS=rows_per_program, num_warps=NUM_WARPS)


def layer_norm(values: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, use_triton: bool = True) -> torch.Tensor:
    """`F.layer_norm(values, values.shape[-1:], weight, bias, eps)` for 2-D `values`."""
    if not (_use_triton(values, use_triton) and values.is_contiguous()):
        return F.layer_norm(values, values.shape[-1:], weight, bias, eps)
    n_rows, n_cols = values.shape
    out = torch.empty_like(values)
    _launch(_layer_norm_rows, n_rows, n_cols, values, weight, bias, out, n_rows, n_cols, eps)
    return out


def embedding_layer_norm(
    input_ids: torch.Tensor, token_type_ids: torch.Tensor, word: torch.Tensor, position: torch.Tensor, token_type: torch.Tensor,
    weight: torch.Tensor, bias: torch.Tensor, eps: float, use_triton: bool = True,
) -> torch.Tensor:  # fmt: skip
    """LayerNorm(word[input_ids] + position[0..seq) + token_type[token_type_ids]) as [batch * seq, hidden]."""
    batch, seq_len = input_ids.shape
    n_cols = word.shape[1]
    if not _use_triton(input_ids, use_triton):
        summed = F.embedding(input_ids, word) + position[:seq_len] + F.embedding(token_type_ids, token_type)
        return F.layer_norm(summed.view(batch * seq_len, n_cols), (n_cols,), weight, bias, eps)
    out = torch.empty((batch * seq_len, n_cols), dtype=word.dtype, device=word.device)
    ids, types = input_ids.contiguous().view(-1), token_type_ids.contiguous().view(-1)
    _launch(_embed_layer_norm_rows, batch * seq_len, n_cols, ids, types, word, position, token_type, weight, bias, out, batch * seq_len, seq_len, n_cols, eps)
    return out
