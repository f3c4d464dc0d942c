"""Which backend runs: the preference order, and the fallback with one logged reason per refusal."""

from __future__ import annotations

import logging
from pathlib import Path

from handler.backends import Backend, BackendUnavailable, OnnxRuntimeBackend, TorchCpuBackend, TorchCudaBackend
from handler.spec import ModelSpec
from handler.trt_backend import TensorRTBackend

logger = logging.getLogger(__name__)

BACKENDS: dict[str, type[Backend]] = {cls.name: cls for cls in (TensorRTBackend, TorchCudaBackend, OnnxRuntimeBackend, TorchCpuBackend)}
AUTO_ORDER = ("tensorrt", "torch_cuda", "onnxruntime", "torch_cpu")


def backend_order(preference: str) -> list[str]:
    """Backends to try: "auto" is TensorRT > torch on CUDA > ONNX Runtime on CPU > torch on CPU;
    a named one falls back along that order."""
    if preference == "auto":
        return list(AUTO_ORDER)
    if preference not in BACKENDS:
        raise ValueError(f"unknown backend {preference!r} in model-config.yaml; choose one of: auto, {', '.join(BACKENDS)}")
    if preference in AUTO_ORDER:
        return list(AUTO_ORDER[AUTO_ORDER.index(preference) :])
    return [preference, "torch_cpu"]


def choose_backend(preference: str, model_dir: str | Path, spec: ModelSpec, options: dict) -> tuple[Backend, list[str]]:
    """Load the first backend in preference order that can run here.

    Returns the loaded backend and the reasons the ones before it were skipped (each also logged once).
    """
    skipped = []
    for name in backend_order(preference):
        backend = BACKENDS[name](model_dir, spec, options)
        try:
            return backend.load(), skipped
        except BackendUnavailable as reason:
            message = f"backend {name} skipped: {reason}"
            logger.warning(message)
        except Exception as error:  # a broken file or an OOM must not take the worker down: try the next one
            message = f"backend {name} failed to load: {type(error).__name__}: {error}"
            logger.exception(message)
            backend.close()
        skipped.append(message)
    raise RuntimeError(f"no backend could be loaded: {'; '.join(skipped)}")
