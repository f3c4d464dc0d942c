"""Eager PyTorch on the CPU: the fallback that always works."""

from __future__ import annotations

import torch

from handler.backends.base import CpuBackend, load_hf_classifier
from handler.backends.torch_io import as_tensors
from handler.settings import TorchCpuOptions, usable_cores


class TorchCpuBackend(CpuBackend):
    """The checkpoint in float32 (optionally with dynamic int8 Linear layers: weights int8, activations
    quantized per batch; accuracy change reported by bench/inprocess_cpu.py)."""

    name = "torch_cpu"
    options: TorchCpuOptions

    def _load_impl(self) -> None:
        torch.set_num_threads(self.options.num_threads or usable_cores())
        self.model = load_hf_classifier(self.model_dir, dtype=torch.float32)
        if self.options.int8:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            self.model = quantize_dynamic(self.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)

    def _infer_impl(self, inputs):
        with torch.inference_mode():
            return self.model(**as_tensors(inputs, self.spec.input_names)).logits.float().numpy()

    def describe(self):
        return {"backend": self.name, "threads": torch.get_num_threads(), "int8": self.options.int8}
