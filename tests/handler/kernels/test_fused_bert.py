"""FusedBertClassifier reproduces the Hugging Face module (float32 on the CPU, where GELU is exact)."""

from __future__ import annotations

import pytest
import torch

from handler.kernels.fused_bert import FusedBertClassifier, UnsupportedModel
from harness.models import padded_inputs, random_hf_model


def test_fused_logits_match_hugging_face_with_padding_and_token_types():
    model, inputs = random_hf_model(), padded_inputs()
    fused = FusedBertClassifier.from_hf(model)
    with torch.inference_mode():
        expected = model(**inputs).logits
        actual = fused(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
    assert expected.abs().max() > 0.1  # not a trivially small comparison
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_no_mask_equals_an_all_ones_mask():
    fused = FusedBertClassifier.from_hf(random_hf_model())
    inputs = padded_inputs()
    with torch.inference_mode():
        without = fused(inputs["input_ids"], inputs["token_type_ids"], None)
        all_ones = fused(inputs["input_ids"], inputs["token_type_ids"], torch.ones_like(inputs["input_ids"]))
    torch.testing.assert_close(without, all_ones)


def test_padding_does_not_change_a_row():
    fused = FusedBertClassifier.from_hf(random_hf_model())
    inputs = padded_inputs()
    with torch.inference_mode():
        batch = fused(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
        alone = fused(inputs["input_ids"][1:2, :5], inputs["token_type_ids"][1:2, :5], None)
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-4, atol=1e-5)


def test_low_precision_path_with_the_gelu_epilogue_stays_close():
    model, inputs = random_hf_model(), padded_inputs()
    fused = FusedBertClassifier.from_hf(model).to(dtype=torch.bfloat16)
    assert all(buffer.dtype == torch.bfloat16 for buffer in fused.buffers())
    with torch.inference_mode():
        expected = model(**inputs).logits
        actual = fused(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "overrides, tokenizer_size, reason",
    [({"hidden_act": "relu"}, None, "hidden_act"), ({"is_decoder": True}, None, "decoder"), ({}, 501, "501 tokens")],
)
def test_unsupported_models_are_refused_with_the_reason(overrides, tokenizer_size, reason):
    with pytest.raises(UnsupportedModel, match=reason):
        FusedBertClassifier.from_hf(random_hf_model(**overrides), tokenizer_size)


def test_tanh_gelu_checkpoints_keep_their_activation():
    model, inputs = random_hf_model(hidden_act="gelu_new"), padded_inputs()
    fused = FusedBertClassifier.from_hf(model)
    assert fused.gelu_approximate == "tanh"
    with torch.inference_mode():
        torch.testing.assert_close(fused(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"]), model(**inputs).logits, rtol=1e-4, atol=1e-5)


def test_sequence_longer_than_the_position_table_is_refused():
    fused = FusedBertClassifier.from_hf(random_hf_model(max_position_embeddings=8))
    ids = torch.ones((1, 9), dtype=torch.long)
    with pytest.raises(ValueError, match="8 positions"):
        fused(ids, torch.zeros_like(ids))


def test_packed_forward_gives_the_padded_forward_logits():
    """With `Packing` the rows of padding are dropped after the embeddings: same logits (float32, CPU)."""
    import numpy as np

    from handler.kernels.fused_bert import Packing

    fused = FusedBertClassifier.from_hf(random_hf_model())
    inputs = padded_inputs()
    packing = Packing.from_mask(inputs["attention_mask"].numpy(), torch.device("cpu"))
    assert len(packing.tokens) == int(inputs["attention_mask"].sum()) and packing.first_tokens.tolist() == [0, 12, 17, 29]
    with torch.inference_mode():
        arguments = (inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
        torch.testing.assert_close(fused(*arguments, packing=packing), fused(*arguments), atol=1e-5, rtol=1e-5)
    assert np.array_equal(packing.tokens.numpy(), np.flatnonzero(inputs["attention_mask"].numpy().reshape(-1)))
