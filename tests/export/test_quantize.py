"""Calibrated static int8: QDQ graph with int8 weight MatMuls, the record in the spec, and the budget refusal."""

from __future__ import annotations

import shutil

import onnx
import pytest

from export.quantize import QuantizationBudgetError, static_int8_from_onnx, weight_matmuls
from handler import layout
from handler.spec import ModelSpec


def test_int8_model_is_qdq_with_every_weight_matmul_quantized(tiny_export):
    model = onnx.load(str(tiny_export / layout.INT8_ONNX_FILE))
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "DynamicQuantizeLinear" not in ops
    fp32_weights = len(weight_matmuls(tiny_export / layout.ONNX_FILE))
    assert fp32_weights == 6 * 2 + 0  # 6 projections per layer, 2 layers (the classifier head is a Gemm)
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    assert len(int8_weights) == fp32_weights


def test_spec_records_how_the_int8_model_was_made(tiny_export):
    record = ModelSpec.load(tiny_export).quantization
    assert record.method == "static int8 (QDQ)" and record.per_channel and record.calibration_texts == 32
    assert record.quantized_ops == "weights" and record.evaluation_texts == 48
    assert 0 <= record.accuracy_int8 <= 1 and record.loss_points == round(100 * (record.accuracy_fp32 - record.accuracy_int8), 2)


def test_over_the_budget_the_int8_file_is_removed_and_the_export_refuses(tiny_checkpoint, tiny_export, labelled_csv, tmp_path):
    for name in (layout.ONNX_FILE, layout.SPEC_FILE):
        shutil.copy2(tiny_export / name, tmp_path / name)
    with pytest.raises(QuantizationBudgetError, match="over the budget of -100"):
        static_int8_from_onnx(tmp_path / layout.ONNX_FILE, tiny_checkpoint, labelled_csv, labelled_csv, calibration_texts=8, budget_points=-100)
    assert not (tmp_path / layout.INT8_ONNX_FILE).exists()
    assert ModelSpec.load(tmp_path).quantization == ModelSpec.load(tiny_export).quantization  # the spec copied, untouched
