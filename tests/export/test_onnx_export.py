"""ONNX export parity: ONNX Runtime reproduces PyTorch on mixed-length padded batches."""

import onnx
import pytest

from export.onnx_export import ParityError, check_onnx_parity, texts_for_parity
from handler.spec import ModelSpec

MIXED_TEXTS = [
    "ok",
    "fine, I guess",
    "the delivery was late but the product itself is excellent and I would buy it again",
    "no",
    "terrible " * 40,
    "this is a medium length sentence about nothing",
] * 5


def test_onnx_signature_has_dynamic_batch_and_sequence(tiny_export):
    model = onnx.load(str(tiny_export / "model.onnx"))
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert inputs == {name: ["batch", "sequence"] for name in ModelSpec.load(tiny_export).input_names}
    assert [o.name for o in model.graph.output] == ["logits"]


def test_onnx_matches_torch_on_padded_batches(tiny_checkpoint, tiny_export):
    report = check_onnx_parity(tiny_export / "model.onnx", tiny_checkpoint, MIXED_TEXTS, batch_size=7)
    assert report.max_abs_logit_diff <= 1e-4
    assert report.argmax_agreement == 1.0
    assert report.batches == 5


def test_parity_failure_lists_mismatches(tiny_checkpoint, tiny_export):
    with pytest.raises(ParityError, match="argmax differs"):
        check_onnx_parity(tiny_export / "model.onnx", tiny_checkpoint, MIXED_TEXTS[:6], tolerance=0.0)


def test_parity_texts_fall_back_to_builtin_mix(tmp_path):
    texts = texts_for_parity(tmp_path / "missing.csv")
    assert len({len(t) for t in texts}) > 3
