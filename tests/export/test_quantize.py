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
    assert 0 <= record.accuracy_quantized <= 1 and record.loss_points == round(100 * (record.accuracy_fp32 - record.accuracy_quantized), 2)


def test_over_the_budget_the_int8_file_is_removed_and_the_export_refuses(tiny_checkpoint, tiny_export, labelled_csv, tmp_path):
    for name in (layout.ONNX_FILE, layout.SPEC_FILE):
        shutil.copy2(tiny_export / name, tmp_path / name)
    with pytest.raises(QuantizationBudgetError, match="over the budget of -100"):
        static_int8_from_onnx(tmp_path / layout.ONNX_FILE, tiny_checkpoint, labelled_csv, labelled_csv, calibration_texts=8, budget_points=-100)
    assert not (tmp_path / layout.INT8_ONNX_FILE).exists()
    assert ModelSpec.load(tmp_path).quantization == ModelSpec.load(tiny_export).quantization  # the spec copied, untouched


@pytest.fixture(scope="module")
def tensorrt_graphs(tiny_checkpoint, tiny_export, labelled_csv, tmp_path_factory):
    """The tiny export with TensorRT's int8 and fp8 QDQ graphs and torch_cuda's FP8 scales written beside it."""
    from export.quantize import CalibrationData, fp8_scales, tensorrt_qdq_onnx

    export = tmp_path_factory.mktemp("trt_qdq")
    for name in (layout.ONNX_FILE, layout.SPEC_FILE):
        shutil.copy2(tiny_export / name, export / name)
    data = CalibrationData.load(export, tiny_checkpoint, labelled_csv, labelled_csv, calibration_texts=40)
    records = {precision: tensorrt_qdq_onnx(export / layout.ONNX_FILE, precision, data, budget_points=100) for precision in ("int8", "fp8")}
    records["torch-fp8"] = fp8_scales(tiny_checkpoint, export, data, budget_points=100)
    return export, records


def test_tensorrt_int8_graph_is_symmetric_int8_qdq_with_its_record_beside_it(tensorrt_graphs):
    import json

    import numpy as np
    from onnx import numpy_helper

    export, records = tensorrt_graphs
    path = export / layout.QDQ_ONNX_FILES["int8"]
    model = onnx.load(str(path))
    zero_points = [node.input[2] for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2]
    initializers = {i.name: i for i in model.graph.initializer}
    assert zero_points and all(initializers[name].data_type == onnx.TensorProto.INT8 for name in zero_points)
    assert all(not np.any(numpy_helper.to_array(initializers[name])) for name in zero_points)  # TensorRT: zero points 0
    assert json.loads(layout.sidecar_path(path).read_text())["method"] == records["int8"].method == "static int8 (QDQ, symmetric)"
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    assert len(int8_weights) == 5 * 2  # the FFN down projection of each of the 2 layers stays float
    assert records["int8"].quantized_ops == "weights except the FFN down projection"


def test_tensorrt_fp8_graph_has_e4m3_weights_at_opset_19(tensorrt_graphs):
    export, records = tensorrt_graphs
    model = onnx.load(str(export / layout.QDQ_ONNX_FILES["fp8"]))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19
    fp8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT8E4M3FN and len(i.dims) == 2]
    assert len(fp8_weights) == len(weight_matmuls(export / layout.ONNX_FILE))
    assert records["fp8"].calibrate_method == "Distribution" and records["fp8"].calibration_texts == 32  # full batches of 16 only


def test_torch_fp8_scales_cover_every_projection_and_carry_their_record(tensorrt_graphs):
    from handler.kernels.fp8_bert import PROJECTIONS, Fp8Calibration

    export, records = tensorrt_graphs
    calibration = Fp8Calibration.load(export / layout.FP8_SCALES_FILE)
    assert set(calibration.input_absmax) == {f"layer{i}_{p}" for i in range(2) for p in PROJECTIONS}
    assert calibration.calibration_texts == 40 and calibration.record["accuracy_quantized"] == records["torch-fp8"].accuracy_quantized
