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


def torch_cuda_forward(model_dir, **options):
    """The torch_cuda backend's model-building step, run on the CPU in float32 (no GPU needed for the glue)."""
    from tests.tiny_model import torch_cuda_model

    return torch_cuda_model(model_dir, torch.device("cpu"), torch.float32, tokenizer_size=30522, **options)


def model_dir_with(model, tokenizer_from, directory):
    """`model` saved as the worker sees it (model/ with the tokenizer of `tokenizer_from`, serving_spec.json)."""
    from transformers import AutoTokenizer

    from handler.spec import ModelSpec

    model.save_pretrained(directory / "model")
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(directory / "model")
    ModelSpec(id2label=dict(enumerate("abc")), max_length=16).save(directory)
    return directory


def test_torch_cuda_backend_builds_the_fused_model_with_the_same_logits(tiny_checkpoint, tmp_path):
    model = random_hf_model(vocab_size=30522)  # the tokenizer's size; non-zero biases exercise the folding
    model_dir = model_dir_with(model, tiny_checkpoint, tmp_path)
    inputs = padded_inputs()
    fused_backend, fused_forward = torch_cuda_forward(model_dir, fused=True)
    hf_backend, hf_forward = torch_cuda_forward(model_dir, fused=False)
    assert (fused_backend.fused, hf_backend.fused) == (True, False)
    with torch.inference_mode():
        arguments = (inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
        expected = model(**inputs).logits
        torch.testing.assert_close(fused_forward(*arguments), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(hf_forward(*arguments), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("overrides", [{"hidden_act": "relu", "vocab_size": 30522}, {"vocab_size": 500}], ids=["relu", "tokenizer_larger_than_vocabulary"])
def test_torch_cuda_backend_falls_back_to_hugging_face_for_other_models(tiny_checkpoint, tmp_path, overrides):
    model = random_hf_model(**overrides)
    backend, forward = torch_cuda_forward(model_dir_with(model, tiny_checkpoint, tmp_path), fused=True)
    assert backend.fused is False
    inputs = padded_inputs()
    with torch.inference_mode():
        expected = model(**inputs).logits
        torch.testing.assert_close(forward(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"]), expected)


def test_graph_choice_uses_the_unmasked_graph_only_for_a_full_unpadded_bucket():
    from handler.backends import graph_key

    buckets = ((1, 2, 4), (16, 32))
    assert graph_key(torch.ones(4, 32), *buckets, unpadded_graphs=True) == (4, 32, False)
    assert graph_key(torch.ones(3, 32), *buckets, unpadded_graphs=True) == (4, 32, True)  # padding rows
    assert graph_key(torch.ones(4, 20), *buckets, unpadded_graphs=True) == (4, 32, True)  # padding columns
    with_padding = torch.ones(4, 32)
    with_padding[2, 30:] = 0
    assert graph_key(with_padding, *buckets, unpadded_graphs=True) == (4, 32, True)
    assert graph_key(torch.ones(4, 32), *buckets, unpadded_graphs=False) == (4, 32, True)


def test_fill_pads_the_bucket_and_gives_padding_rows_one_token():
    from handler.backends import _CapturedBatch

    host = torch.full((3, 4, 8), 7, dtype=torch.long)  # stale values from an earlier, larger batch
    inputs = {"input_ids": torch.tensor([[5, 6, 9], [5, 8, 0]]), "token_type_ids": torch.zeros(2, 3, dtype=torch.long),
              "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}  # fmt: skip
    _CapturedBatch.fill(host, inputs, batch=2, length=3)
    ids, types, mask = host
    assert ids[:2, :3].tolist() == inputs["input_ids"].tolist() and ids[:, 3:].eq(0).all() and ids[2:].eq(0).all()
    assert types.eq(0).all()
    assert mask[:2, :3].tolist() == inputs["attention_mask"].tolist() and mask[:2, 3:].eq(0).all()
    assert mask[2:].tolist() == [[1, 0, 0, 0, 0, 0, 0, 0]] * 2
