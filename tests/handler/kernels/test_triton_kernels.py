"""The Triton kernels agree with the PyTorch maths they replace (GPU only; CPU runs take the PyTorch path)."""

from __future__ import annotations

import pytest
import torch

from handler.kernels.triton_kernels import embedding_layer_norm, layer_norm, triton_available

#: absolute and relative tolerance per dtype (both paths compute in float32; they round differently)
TOLERANCE = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 1e-4}

needs_triton_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and triton_available()), reason="needs a CUDA GPU and Triton")


@pytest.mark.gpu
@needs_triton_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows, cols", [(1, 768), (37, 768), (4096, 384), (33, 100), (5, 5000)])
def test_layer_norm_matches_pytorch(rows, cols, dtype):
    values = torch.randn(rows, cols, device="cuda", dtype=dtype) * 3 + 1
    weight, bias = torch.randn(cols, device="cuda", dtype=dtype), torch.randn(cols, device="cuda", dtype=dtype)
    expected = layer_norm(values, weight, bias, 1e-12, use_triton=False)
    torch.testing.assert_close(layer_norm(values, weight, bias, 1e-12), expected, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


@pytest.mark.gpu
@needs_triton_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("batch, seq", [(1, 16), (3, 37), (128, 128)])
def test_embedding_layer_norm_matches_pytorch(batch, seq, dtype):
    hidden = 384
    tables = [torch.randn(rows, hidden, device="cuda", dtype=dtype) for rows in (1000, 512, 2)]
    weight, bias = torch.randn(hidden, device="cuda", dtype=dtype), torch.randn(hidden, device="cuda", dtype=dtype)
    ids = torch.randint(0, 1000, (batch, seq), device="cuda")
    types = torch.randint(0, 2, (batch, seq), device="cuda")
    expected = embedding_layer_norm(ids, types, *tables, weight, bias, 1e-12, use_triton=False)
    torch.testing.assert_close(embedding_layer_norm(ids, types, *tables, weight, bias, 1e-12), expected, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])
