"""FusedBertClassifier reproduces the Hugging Face module (float32 on the CPU, where GELU is exact)."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from handler.fused_bert import FusedBertClassifier, UnsupportedModel

SMALL = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128, num_labels=3, vocab_size=500)


def random_hf_model(**overrides) -> BertForSequenceClassification:
    """Random BERT whose biases and LayerNorm shifts are non-zero (the fused module folds them)."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**(SMALL | overrides))).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.3)
    return model


def padded_inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    input_ids = torch.randint(5, 500, (4, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    attention_mask[3, 2:] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 6:] = 1
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


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


def test_module_converts_to_half_precision_buffers():
    fused = FusedBertClassifier.from_hf(random_hf_model()).to(dtype=torch.float16)
    assert fused.dtype == torch.float16
    assert all(buffer.dtype == torch.float16 for buffer in fused.buffers())


def test_other_activations_are_refused_with_the_reason():
    with pytest.raises(UnsupportedModel, match="hidden_act"):
        FusedBertClassifier.from_hf(random_hf_model(hidden_act="relu"))


def test_sequence_longer_than_the_position_table_is_refused():
    fused = FusedBertClassifier.from_hf(random_hf_model(max_position_embeddings=8))
    ids = torch.ones((1, 9), dtype=torch.long)
    with pytest.raises(ValueError, match="8 positions"):
        fused(ids, torch.zeros_like(ids))


def torch_cuda_forward(model_dir, fused: bool):
    """The torch_cuda backend's model-building step, run on the CPU in float32 (no GPU needed for the glue)."""
    from handler.backends import TorchCudaBackend
    from handler.spec import ModelSpec

    backend = TorchCudaBackend(model_dir, ModelSpec.load(model_dir), {"fused": fused})
    backend.device = torch.device("cpu")
    _, forward = backend._build_model(torch.float32)
    return backend, forward


def test_torch_cuda_backend_builds_the_fused_model_with_the_same_logits(tiny_checkpoint, tiny_export, tmp_path):
    from tests.tiny_model import model_dir_like_mar

    model_dir = model_dir_like_mar(tiny_checkpoint, tiny_export, tmp_path)
    inputs = padded_inputs()
    inputs["input_ids"] = inputs["input_ids"] % 1000
    fused_backend, fused_forward = torch_cuda_forward(model_dir, fused=True)
    hf_backend, hf_forward = torch_cuda_forward(model_dir, fused=False)
    assert (fused_backend.fused, hf_backend.fused) == (True, False)
    with torch.inference_mode():
        arguments = (inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
        torch.testing.assert_close(fused_forward(*arguments), hf_forward(*arguments), rtol=1e-4, atol=1e-5)


def test_torch_cuda_backend_falls_back_to_hugging_face_for_other_models(tmp_path):
    from handler.spec import ModelSpec

    model = random_hf_model(hidden_act="relu")
    model.save_pretrained(tmp_path / "model")
    ModelSpec(id2label=dict(enumerate("abc")), max_length=16).save(tmp_path)
    backend, forward = torch_cuda_forward(tmp_path, fused=True)
    assert backend.fused is False
    inputs = padded_inputs()
    with torch.inference_mode():
        expected = model(**inputs).logits
        torch.testing.assert_close(forward(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"]), expected)
