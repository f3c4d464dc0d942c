"""The FP8 module: calibration, its maths against the float32 module (emulated on the CPU), and on a GPU
with FP8 tensor cores the real kernels against the emulation."""

from __future__ import annotations

import pytest
import torch

from handler.kernels.fp8_bert import PROJECTIONS, Fp8BertClassifier, Fp8Calibration, Fp8Unavailable, calibrate
from handler.kernels.fused_bert import FusedBertClassifier
from handler.kernels.triton_kernels import FP8_E4M3_MAX, add_layer_norm_fp8, quantize_fp8_reference, to_fp8, triton_available
from harness.models import padded_inputs, random_hf_model

needs_fp8_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and triton_available() and torch.cuda.get_device_capability() >= (8, 9)),
    reason="needs a CUDA GPU with FP8 tensor cores (sm 8.9+) and Triton",
)


def arguments(inputs: dict, device: str = "cpu"):
    return tuple(inputs[name].to(device) for name in ("input_ids", "token_type_ids", "attention_mask"))


@pytest.fixture(scope="module")
def fused_and_calibration():
    fused = FusedBertClassifier.from_hf(random_hf_model()).eval()
    calibration = calibrate(fused, [arguments(padded_inputs())], "padded_inputs", 0)
    return fused, calibration


def test_calibration_records_every_projection_input_over_real_tokens_only(fused_and_calibration):
    fused, calibration = fused_and_calibration
    assert set(calibration.input_absmax) == {f"layer{i}_{p}" for i in range(fused.num_layers) for p in PROJECTIONS}
    assert all(value > 0 for value in calibration.input_absmax.values()) and calibration.calibration_texts == 4
    assert fused.observer is None  # the hook is removed after calibrating


def test_fp8_module_stays_close_to_float32_with_the_same_argmax(fused_and_calibration):
    fused, calibration = fused_and_calibration
    fp8 = Fp8BertClassifier(fused, calibration).to_device(torch.device("cpu"), torch.float32)
    assert getattr(fp8, "layer0_qkv_weight_fp8").dtype == torch.float8_e4m3fn and not hasattr(fp8, "layer0_qkv_weight")
    with torch.inference_mode():
        expected = torch.softmax(fused(*arguments(padded_inputs())), -1)
        got = torch.softmax(fp8(*arguments(padded_inputs())), -1)
    assert (got - expected).abs().max() < 0.05
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_fp8_answers_do_not_depend_on_the_batch(fused_and_calibration):
    fused, calibration = fused_and_calibration
    fp8 = Fp8BertClassifier(fused, calibration).to_device(torch.device("cpu"), torch.float32)
    ids, types, mask = arguments(padded_inputs())
    with torch.inference_mode():
        together = fp8(ids, types, mask)
        alone = torch.cat([fp8(ids[i : i + 1], types[i : i + 1], mask[i : i + 1]) for i in range(len(ids))])
    assert (torch.softmax(together, -1) - torch.softmax(alone, -1)).abs().max() <= 1e-4


def test_saturating_quantization_and_scales_round_trip(tmp_path):
    values = torch.tensor([0.0, 1.0, -3.0, 1e6, -1e6])
    quantized = quantize_fp8_reference(values, 2.0).float()
    assert quantized.tolist() == [0.0, 2.0, -6.0, FP8_E4M3_MAX, -FP8_E4M3_MAX]  # saturates, never inf/nan
    calibration = Fp8Calibration({"layer0_qkv": 1.5}, "train.csv", 300, 0)
    calibration.save(tmp_path / "scales.json")
    assert Fp8Calibration.load(tmp_path / "scales.json") == calibration
    with pytest.raises(Fp8Unavailable, match="export.quantize --fp8|export.quantize"):
        Fp8Calibration.load(tmp_path / "missing.json")


@pytest.mark.gpu
@needs_fp8_gpu
@pytest.mark.parametrize("gelu", [None, "none", "tanh"])
def test_to_fp8_kernel_matches_the_reference(gelu):
    values = torch.randn(333, 768, device="cuda", dtype=torch.float16) * 4
    expected = to_fp8(values, 30.0, gelu=gelu, use_triton=False).float()
    got = to_fp8(values, 30.0, gelu=gelu).float()
    # one e4m3 step (12.5% relative) at most where the fp16 rounding of GELU lands on a rounding boundary
    torch.testing.assert_close(got, expected, atol=0.02, rtol=0.13)
    assert (got == expected).float().mean() > 0.99


@pytest.mark.gpu
@needs_fp8_gpu
def test_add_layer_norm_fp8_kernel_matches_the_reference():
    values, residual = (torch.randn(257, 384, device="cuda", dtype=torch.float16) for _ in range(2))
    weight, bias = torch.randn(384, device="cuda", dtype=torch.float16), torch.randn(384, device="cuda", dtype=torch.float16)
    expected, expected8 = add_layer_norm_fp8(values, residual, weight, bias, 1e-12, 20.0, use_triton=False)
    got, got8 = add_layer_norm_fp8(values, residual, weight, bias, 1e-12, 20.0)
    torch.testing.assert_close(got, expected, atol=4e-3, rtol=4e-3)
    assert (got8.float() == expected8.float()).float().mean() > 0.99


@pytest.mark.gpu
@needs_fp8_gpu
def test_fp8_module_on_the_gpu_matches_its_cpu_emulation(fused_and_calibration):
    fused, calibration = fused_and_calibration
    emulated = Fp8BertClassifier(fused, calibration).to_device(torch.device("cpu"), torch.float32)
    on_gpu = Fp8BertClassifier(fused, calibration).to_device(torch.device("cuda"), torch.float16)
    with torch.inference_mode():
        expected = torch.softmax(emulated(*arguments(padded_inputs())), -1)
        got = torch.softmax(on_gpu(*arguments(padded_inputs(), "cuda")).float(), -1).cpu()
    assert (got - expected).abs().max() < 0.02
