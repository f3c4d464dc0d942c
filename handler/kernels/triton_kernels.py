"""Triton kernels for FusedBertClassifier: LayerNorm, and embedding lookup + sum + LayerNorm; and for its
FP8 variant (handler/kernels/fp8_bert.py): residual add + LayerNorm writing an FP8 copy, and GELU / cast to FP8.

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
#: largest finite float8_e4m3fn value
FP8_E4M3_MAX = 448.0
#: GELU forms of `to_fp8` (0: none), by the `approximate` argument of F.gelu
GELU_CODES = {"none": 1, "tanh": 2}
FP8_BLOCK = 2048

if triton is not None:
    _FP8_MAX = tl.constexpr(FP8_E4M3_MAX)

    @triton.jit
    def _saturate(x):
        return tl.minimum(tl.maximum(x, -_FP8_MAX), _FP8_MAX)

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


    @triton.jit
    def _add_layer_norm_fp8_rows(
        x_ptr, residual_ptr, weight_ptr, bias_ptr, out_ptr, out8_ptr, n_rows, n_cols, eps, inverse_scale,
        QUANTIZE: tl.constexpr, BLOCK_COLS: tl.constexpr, ROWS: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, BLOCK_COLS)
        col_ok = cols < n_cols
        mask = (rows < n_rows)[:, None] & col_ok[None, :]
        offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32) + tl.load(residual_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        normalized = _normalize(x, mask, cols, col_ok, weight_ptr, bias_ptr, n_cols, eps)
        rounded = normalized.to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + offsets, rounded, mask=mask)
        if QUANTIZE:
            scaled = _saturate(rounded.to(tl.float32) * inverse_scale)
            tl.store(out8_ptr + offsets, scaled.to(out8_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _to_fp8(x_ptr, out8_ptr, n_elements, inverse_scale, GELU: tl.constexpr, BLOCK: tl.constexpr):
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = offsets < n_elements
        x = tl.load(x_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        if GELU == 1:  # exact (erf) form
            x = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
        elif GELU == 2:  # tanh form, tanh(z) = 2 sigmoid(2z) - 1
            x = x * tl.sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))
        if GELU != 0:
            x = x.to(x_ptr.dtype.element_ty).to(tl.float32)  # round as the unfused GELU's fp16 output would be
        scaled = _saturate(x * inverse_scale)
        tl.store(out8_ptr + offsets, scaled.to(out8_ptr.dtype.element_ty), mask=ok)


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


def quantize_fp8_reference(values: torch.Tensor, inverse_scale: float) -> torch.Tensor:
    """`values` / scale, clamped to e4m3's range and rounded to float8_e4m3fn (PyTorch ops)."""
    return (values.float() * inverse_scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)


def to_fp8(values: torch.Tensor, inverse_scale: float, gelu: str | None = None, use_triton: bool = True) -> torch.Tensor:
    """float8_e4m3fn of (GELU(`values`) if `gelu` names its form, else `values`) x `inverse_scale`, saturating."""
    if not (_use_triton(values, use_triton) and values.is_contiguous()):
        if gelu is not None:
            values = F.gelu(values, approximate=gelu)
        return quantize_fp8_reference(values, inverse_scale)
    out = torch.empty(values.shape, dtype=torch.float8_e4m3fn, device=values.device)
    n_elements = values.numel()
    _to_fp8[(triton.cdiv(n_elements, FP8_BLOCK),)](values, out, n_elements, inverse_scale, GELU=GELU_CODES[gelu] if gelu else 0, BLOCK=FP8_BLOCK, num_warps=NUM_WARPS)
    return out


def add_layer_norm_fp8(
    values: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
    inverse_scale: float | None, use_triton: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """LayerNorm(`values` + `residual`) for 2-D inputs, and its float8_e4m3fn copy x `inverse_scale` (None: no copy)."""
    if not (_use_triton(values, use_triton) and values.is_contiguous() and residual.is_contiguous()):
        normalized = F.layer_norm(values + residual, values.shape[-1:], weight, bias, eps)
        return normalized, None if inverse_scale is None else quantize_fp8_reference(normalized, inverse_scale)
    n_rows, n_cols = values.shape
    out = torch.empty_like(values)
    out8 = torch.empty(values.shape, dtype=torch.float8_e4m3fn, device=values.device) if inverse_scale is not None else out
    _launch(
        _add_layer_norm_fp8_rows, n_rows, n_cols, values, residual, weight, bias, out, out8, n_rows, n_cols, eps,
        inverse_scale or 1.0, inverse_scale is not None,
    )  # fmt: skip
    return out, out8 if inverse_scale is not None else None
