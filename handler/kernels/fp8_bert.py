"""FusedBertClassifier with its four projections per layer in FP8 (e4m3), for GPUs with FP8 tensor cores.

QKV, attention output, up and down projections take float8_e4m3fn inputs and weights through
`torch._scaled_mm` (fp32 accumulation, fp16 output, bias in the epilogue). Scales are per tensor and
static: weights' from the checkpoint (absmax / 448), activations' from calibration texts
(`export.quantize --write torch-fp8` writes fp8_scales.json with each projection input's absmax), so a text's
answer does not depend on the other texts of its batch. The kernel producing each projection's
input writes it in FP8 directly (handler/kernels/triton_kernels.py): residual add + LayerNorm writes
the fp16 stream and its FP8 copy, GELU (exact erf form) writes FP8, attention's context is cast by one
kernel. Embeddings, LayerNorm, softmax, residuals and the pooler/classifier stay in fp16 (fp32 maths).

Where `_scaled_mm` or Triton cannot run (CPU), the same roundings are emulated: inputs and weights are
rounded to FP8 as on the GPU and multiplied in float32 — used to measure accuracy in CI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from handler.kernels.fused_bert import FusedBertClassifier
from handler.kernels.triton_kernels import FP8_E4M3_MAX, add_layer_norm_fp8, quantize_fp8_reference, to_fp8

PROJECTIONS = ("qkv", "out", "up", "down")
#: FP8 tensor cores: Ada (8.9), Hopper (9.0), Blackwell (10.x, 12.x)
FP8_MIN_CAPABILITY = (8, 9)
#: torch._scaled_mm wants the rows of its first operand in multiples of 16
ROW_MULTIPLE = 16


class Fp8Unavailable(RuntimeError):
    """FP8 cannot run here (GPU without FP8 tensor cores, or no calibration file); the message says why."""


def fp8_capable(device: torch.device) -> bool:
    """True for CUDA devices with FP8 tensor cores."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= FP8_MIN_CAPABILITY


@dataclass(frozen=True)
class Fp8Calibration:
    """Largest |value| seen at each projection's input ("layer3_up" -> 7.2), and the texts that showed it."""

    input_absmax: dict[str, float]
    calibration_source: str
    calibration_texts: int
    seed: int
    #: how the scales were checked (export.quantize's QuantizationRecord as a dict), when they were
    record: dict | None = None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Fp8Calibration":
        if not path.is_file():
            raise Fp8Unavailable(f"{path} is missing: write it with `python -m export.quantize --write torch-fp8` and rebuild the archive")
        return cls(**json.loads(path.read_text()))


@torch.inference_mode()
def calibrate(module: FusedBertClassifier, batches, source: str, seed: int) -> Fp8Calibration:
    """Run float32 `module` over `batches` of (input_ids, token_type_ids, attention_mask) and record each
    projection input's absmax over the real (unpadded) tokens."""
    absmax: dict[str, float] = {}
    keep: list[torch.Tensor] = []

    def observe(key: str, values: torch.Tensor) -> None:
        real = values[keep[0]] if keep else values
        absmax[key] = max(absmax.get(key, 0.0), float(real.abs().max()))

    module.observer = observe
    texts = 0
    try:
        for input_ids, token_type_ids, attention_mask in batches:
            keep[:] = [attention_mask.reshape(-1) != 0]
            module(input_ids, token_type_ids, attention_mask)
            texts += input_ids.shape[0]
    finally:
        module.observer = None
    return Fp8Calibration(absmax, source, texts, seed)


class Fp8BertClassifier(FusedBertClassifier):
    """`Fp8BertClassifier(fused_module, calibration)` builds it on the CPU; `to_device` places it; `forward` returns logits."""

    #: Hopper's fast FP8 accumulation in `_scaled_mm` (fewer fp32 promotions; bench/gpu_fp8.py measures it)
    fast_accumulation = False

    def __init__(self, fused: FusedBertClassifier, calibration: Fp8Calibration):
        state = {name: tensor.float() for name, tensor in fused.named_buffers()}
        scales = {}
        for index in range(fused.num_layers):
            for projection in PROJECTIONS:
                key = f"layer{index}_{projection}"
                weight = state.pop(f"{key}_weight")
                if weight.shape[0] % ROW_MULTIPLE or weight.shape[1] % ROW_MULTIPLE:
                    raise Fp8Unavailable(f"{key} is {tuple(weight.shape)}: FP8 GEMMs need both sizes in multiples of {ROW_MULTIPLE}")
                weight_scale = max(float(weight.abs().max()), 1e-12) / FP8_E4M3_MAX
                input_scale = max(calibration.input_absmax[key], 1e-12) / FP8_E4M3_MAX
                state[f"{key}_weight_fp8"] = quantize_fp8_reference(weight, 1 / weight_scale)
                state[f"{key}_input_scale"] = torch.tensor(input_scale, dtype=torch.float32)
                state[f"{key}_weight_scale"] = torch.tensor(weight_scale, dtype=torch.float32)
                scales[key] = input_scale
        super().__init__(state, fused.num_layers, fused.num_heads, fused.layer_norm_eps, fused.gelu_approximate)
        #: 1 / input scale of each projection, as Python floats for the kernels that write its FP8 input
        self.inverse_input_scale = {key: 1 / scale for key, scale in scales.items()}

    def to_device(self, device: torch.device, dtype: torch.dtype = torch.float16) -> "Fp8BertClassifier":
        """Move to `device`: FP8 weights and float32 scales keep their dtype, everything else becomes `dtype`."""
        for name, tensor in list(self.named_buffers()):
            keep = tensor.dtype == torch.float8_e4m3fn or name.endswith("_scale")
            setattr(self, name, tensor.to(device) if keep else tensor.to(device, dtype))
        return self

    def _encoder(self, stream, bias_mask, batch, length, packing=None):
        quantized = to_fp8(stream, self.inverse_input_scale["layer0_qkv"], use_triton=self.triton_kernels)
        for index in range(self.num_layers):
            following = f"layer{index + 1}_qkv" if index + 1 < self.num_layers else None
            stream, quantized = self._fp8_layer(index, stream, quantized, bias_mask, batch, length, following, packing)
        return stream

    def _fp8_layer(self, index, stream, quantized, bias_mask, batch, length, following, packing):
        key = lambda projection: f"layer{index}_{projection}"  # noqa: E731
        qkv = self._gemm(quantized, key("qkv"), getattr(self, f"layer{index}_qkv_bias"))
        context = self._attention(qkv, bias_mask, batch, length, packing)
        projected = self._gemm(to_fp8(context, self.inverse_input_scale[key("out")], use_triton=self.triton_kernels), key("out"))
        stream, quantized = self._add_layer_norm(projected, stream, f"layer{index}_ln1", key("up"))
        intermediate = self._gemm(quantized, key("up"), getattr(self, f"layer{index}_up_bias"))
        gelu = to_fp8(intermediate, self.inverse_input_scale[key("down")], gelu=self.gelu_approximate, use_triton=self.triton_kernels)
        projected = self._gemm(gelu, key("down"))
        return self._add_layer_norm(projected, stream, f"layer{index}_ln2", following)

    def _add_layer_norm(self, projected, stream, prefix, following):
        weight, bias = getattr(self, f"{prefix}_weight"), getattr(self, f"{prefix}_bias")
        inverse = self.inverse_input_scale[following] if following else None
        return add_layer_norm_fp8(projected, stream, weight, bias, self.layer_norm_eps, inverse, use_triton=self.triton_kernels)

    def _gemm(self, inputs: torch.Tensor, key: str, bias: torch.Tensor | None = None) -> torch.Tensor:
        """inputs (FP8) @ weight(key).T x both scales (+ bias), in the module's dtype."""
        weight = getattr(self, f"{key}_weight_fp8")
        input_scale, weight_scale = getattr(self, f"{key}_input_scale"), getattr(self, f"{key}_weight_scale")
        if not inputs.is_cuda:  # emulation: the same FP8 values, multiplied in float32
            out = (inputs.float() * input_scale) @ (weight.float() * weight_scale).t()
            return (out if bias is None else out + bias.float()).to(self.dtype)
        rows = inputs.shape[0]
        padding = -rows % ROW_MULTIPLE
        if padding:
            inputs = torch.cat([inputs, inputs.new_zeros((padding, inputs.shape[1]))])
        out = torch._scaled_mm(inputs, weight.t(), scale_a=input_scale, scale_b=weight_scale, bias=bias, out_dtype=self.dtype, use_fast_accum=self.fast_accumulation)
        return out[:rows] if padding else out
