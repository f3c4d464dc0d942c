"""Inference backends: one interface, several implementations, chosen once at start.

Style after Polygraphy's runners: the public `load` / `infer` / `close` methods hold the
state checks and call small `_load_impl` / `_infer_impl` / `_close_impl` methods that
subclasses fill in. A backend that cannot run here raises `BackendUnavailable` from
`load` with one sentence saying why; `choose_backend` logs it and tries the next one.

Every backend takes int64 CPU tensors named after `ModelSpec.input_names` and returns
float32 CPU logits of shape [batch, num_labels].
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from handler.spec import ModelSpec

logger = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "model"


class BackendUnavailable(RuntimeError):
    """This backend cannot run on this machine; the message says why (and how to fix it)."""


class Backend:
    """Base class: lifecycle checks here, the work in the `_impl` methods."""

    name = "base"
    #: largest batch one `infer` call accepts (None: any); bigger batches are split by the caller
    max_batch_size: int | None = None
    #: longest sequence the backend accepts (None: the spec's max_length)
    max_sequence_length: int | None = None

    def __init__(self, model_dir: str | Path, spec: ModelSpec, options: dict | None = None):
        self.model_dir = Path(model_dir)
        self.spec = spec
        self.options = dict(options or {})
        self.loaded = False

    def load(self) -> "Backend":
        """Prepare the backend; raises `BackendUnavailable` if it cannot run here."""
        if self.loaded:
            return self
        self._load_impl()
        self.loaded = True
        return self

    def infer(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run one batch; returns float32 CPU logits [batch, num_labels]."""
        if not self.loaded:
            raise RuntimeError(f"backend {self.name} used before load()")
        missing = [name for name in self.spec.input_names if name not in inputs]
        if missing:
            raise ValueError(f"backend {self.name} is missing inputs {missing}")
        return self._infer_impl(inputs)

    def close(self) -> None:
        """Release what `load` took; safe to call twice."""
        if self.loaded:
            self._close_impl()
            self.loaded = False

    def describe(self) -> dict:
        """Facts worth logging about the loaded backend."""
        return {"backend": self.name}

    def _load_impl(self) -> None:
        raise NotImplementedError

    def _infer_impl(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _close_impl(self) -> None:
        pass


def _load_hf_classifier(model_dir: Path, **kwargs):
    from transformers import AutoModelForSequenceClassification

    checkpoint = model_dir / CHECKPOINT_SUBDIR
    if not (checkpoint / "config.json").is_file():
        raise BackendUnavailable(f"no checkpoint at {checkpoint}: rebuild the .mar with build_mar.py --checkpoint DIR")
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, local_files_only=True, **kwargs)
    return model.eval()


class TorchCpuBackend(Backend):
    """Eager PyTorch on the CPU, fp32; the fallback that always works.

    Options: ``num_threads`` (int; default: CPU cores / workers, at least 1).
    """

    name = "torch_cpu"

    def _load_impl(self) -> None:
        threads = int(self.options.get("num_threads") or os.cpu_count() or 1)
        torch.set_num_threads(max(1, threads))
        self.model = _load_hf_classifier(self.model_dir, dtype=torch.float32)

    def _infer_impl(self, inputs):
        with torch.inference_mode():
            return self.model(**{name: inputs[name] for name in self.spec.input_names}).logits.float()

    def describe(self):
        return {"backend": self.name, "threads": torch.get_num_threads()}


class TorchCudaBackend(Backend):
    """PyTorch on one CUDA device: fp16 weights, SDPA attention, `inference_mode`.

    Options: ``gpu_id`` (int, from TorchServe), ``dtype`` ("float16" default, or "float32").
    """

    name = "torch_cuda"

    def _load_impl(self) -> None:
        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device visible to this worker")
        gpu_id = int(self.options.get("gpu_id") or 0)
        torch.cuda.set_device(gpu_id)
        self.device = torch.device("cuda", gpu_id)
        dtype_name = self.options.get("dtype", "float16")
        dtype = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
        self.model = _load_hf_classifier(self.model_dir, dtype=dtype, attn_implementation="sdpa").to(self.device)

    def _infer_impl(self, inputs):
        with torch.inference_mode():
            on_device = {name: inputs[name].to(self.device, non_blocking=True) for name in self.spec.input_names}
            return self.model(**on_device).logits.float().cpu()

    def describe(self):
        return {"backend": self.name, "device": torch.cuda.get_device_name(self.device)}


BACKENDS: dict[str, type[Backend]] = {cls.name: cls for cls in (TorchCudaBackend, TorchCpuBackend)}
AUTO_ORDER = ("tensorrt", "torch_cuda", "torch_cpu")


def backend_order(preference: str) -> list[str]:
    """Names to try for a preference: "auto" means TensorRT, then torch on CUDA, then torch on CPU."""
    if preference == "auto":
        return [name for name in AUTO_ORDER if name in BACKENDS]
    if preference not in BACKENDS:
        raise ValueError(f"unknown backend {preference!r}; choose one of: auto, {', '.join(BACKENDS)}")
    return [preference] if preference == "torch_cpu" else [preference, "torch_cpu"]


def choose_backend(preference: str, model_dir: str | Path, spec: ModelSpec, options: dict) -> tuple[Backend, list[str]]:
    """Load the first backend in preference order that can run here.

    Returns the loaded backend and the reasons the ones before it were skipped
    (each also logged once).
    """
    skipped = []
    for name in backend_order(preference):
        backend = BACKENDS[name](model_dir, spec, options)
        try:
            return backend.load(), skipped
        except BackendUnavailable as reason:
            message = f"backend {name} skipped: {reason}"
            logger.warning(message)
            skipped.append(message)
    raise RuntimeError(f"no backend could be loaded: {'; '.join(skipped)}")
