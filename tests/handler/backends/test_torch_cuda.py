"""The torch_cuda backend's model building: the fused module where it reproduces the checkpoint, the
Hugging Face module otherwise (run on the CPU in float32; the GPU path is measured by bench/gpu_*.py)."""

from __future__ import annotations

import pytest
import torch

from handler import layout
from handler.backends.torch_cuda import build_cuda_model
from handler.spec import ModelSpec
from harness.models import padded_inputs, random_hf_model


def torch_cuda_model(model_dir, fused: bool):
    """The torch_cuda backend's model-building step, run on the CPU in float32 (no GPU needed for the glue)."""
    return build_cuda_model(model_dir, torch.device("cpu"), torch.float32, fused=fused, tokenizer_size=30522)


def model_dir_with(model, tokenizer_from, directory):
    """`model` saved as the worker sees it (model/ with the tokenizer of `tokenizer_from`, serving_spec.json)."""
    from transformers import AutoTokenizer

    model.save_pretrained(directory / layout.CHECKPOINT_DIR)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(directory / layout.CHECKPOINT_DIR)
    ModelSpec(id2label=dict(enumerate("abc")), max_length=16).save(directory)
    return directory


def test_torch_cuda_backend_builds_the_fused_model_with_the_same_logits(tiny_checkpoint, tmp_path):
    model = random_hf_model(vocab_size=30522)  # the tokenizer's size; non-zero biases exercise the folding
    model_dir = model_dir_with(model, tiny_checkpoint, tmp_path)
    inputs = padded_inputs()
    fused_model = torch_cuda_model(model_dir, fused=True)
    hf_model = torch_cuda_model(model_dir, fused=False)
    assert (fused_model.fused, hf_model.fused) == (True, False)
    fused_forward, hf_forward = fused_model.forward, hf_model.forward
    with torch.inference_mode():
        arguments = (inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
        expected = model(**inputs).logits
        torch.testing.assert_close(fused_forward(*arguments), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(hf_forward(*arguments), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("overrides", [{"hidden_act": "relu", "vocab_size": 30522}, {"vocab_size": 500}], ids=["relu", "tokenizer_larger_than_vocabulary"])
def test_torch_cuda_backend_falls_back_to_hugging_face_for_other_models(tiny_checkpoint, tmp_path, overrides):
    model = random_hf_model(**overrides)
    built = torch_cuda_model(model_dir_with(model, tiny_checkpoint, tmp_path), fused=True)
    assert built.fused is False
    forward = built.forward
    inputs = padded_inputs()
    with torch.inference_mode():
        expected = model(**inputs).logits
        torch.testing.assert_close(forward(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"]), expected)
