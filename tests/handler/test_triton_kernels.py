"""The Triton kernels agree with the PyTorch maths they replace (GPU only; CPU runs take the PyTorch path)."""

from __future__ import annotations

import pytest
import torch

from handler.triton_kernels import embedding_layer_norm, layer_norm, triton_available

needs_triton_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and triton_available()), reason="needs a CUDA GPU and Triton")


def test_cpu_tensors_take_the_pytorch_path():
    values, weight, bias = torch.randn(5, 24), torch.randn(24), torch.randn(24)
    expected = torch.nn.functional.layer_norm(values, (24,), weight, bias, 1e-12)
    torch.testing.assert_close(layer_norm(values, weight, bias, 1e-12), expected)


@pytest.mark.gpu
@needs_triton_gpu
@pytest.mark.parametrize("rows, cols", [(1, 768), (37, 768), (4096, 384), (33, 100)])
def test_layer_norm_matches_pytorch(rows, cols):
    values = torch.randn(rows, cols, device="cuda", dtype=torch.float16) * 3 + 1
    weight, bias = torch.randn(cols, device="cuda", dtype=torch.float16), torch.randn(cols, device="cuda", dtype=torch.float16)
    expected = layer_norm(values, weight, bias, 1e-12, use_triton=False)
    torch.testing.assert_close(layer_norm(values, weight, bias, 1e-12), expected, atol=4e-3, rtol=4e-3)


@pytest.mark.gpu
@needs_triton_gpu
@pytest.mark.parametrize("batch, seq", [(1, 16), (3, 37), (128, 128)])
def test_embedding_layer_norm_matches_pytorch(batch, seq):
    hidden = 384
    tables = [torch.randn(rows, hidden, device="cuda", dtype=torch.float16) for rows in (1000, 512, 2)]
    weight, bias = torch.randn(hidden, device="cuda", dtype=torch.float16), torch.randn(hidden, device="cuda", dtype=torch.float16)
    ids = torch.randint(0, 1000, (batch, seq), device="cuda")
    types = torch.randint(0, 2, (batch, seq), device="cuda")
    expected = embedding_layer_norm(ids, types, *tables, weight, bias, 1e-12, use_triton=False)
    torch.testing.assert_close(embedding_layer_norm(ids, types, *tables, weight, bias, 1e-12), expected, atol=4e-3, rtol=4e-3)
