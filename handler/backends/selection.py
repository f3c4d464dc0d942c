"""Which backend runs: the preference order, and the fallback with one logged reason per refusal."""

from __future__ import annotations

import logging
from pathlib import Path

from handler.backends.base import Backend
from handler.backends.onnxruntime import OnnxRuntimeBackend
from handler.backends.tensorrt import TensorRTBackend
from handler.backends.torch_cpu import TorchCpuBackend
from handler.backends.torch_cuda import TorchCudaBackend
from handler.errors import BackendUnavailable, SettingsError
from handler.settings import BACKEND_NAMES, HandlerSettings
from handler.spec import ModelSpec

logger = logging.getLogger(__name__)

BACKENDS: dict[str, type[Backend]] = {cls.name: cls for cls in (TensorRTBackend, TorchCudaBackend, OnnxRuntimeBackend, TorchCpuBackend)}
assert tuple(BACKENDS) == BACKEND_NAMES, "settings.BACKEND_NAMES must list the backends in preference order"


def backend_order(preference: str) -> list[str]:
    """Backends to try: "auto" is TensorRT > torch on CUDA > ONNX Runtime on CPU > torch on CPU;
    a named one falls back along that order."""
    if preference == "auto":
        return list(BACKEND_NAMES)
    if preference not in BACKENDS:
        raise SettingsError(f"unknown backend {preference!r} in model-config.yaml; choose one of: auto, {', '.join(BACKENDS)}")
    return list(BACKEND_NAMES[BACKEND_NAMES.index(preference) :])


def choose_backend(
    settings: HandlerSettings, model_dir: str | Path, spec: ModelSpec, *, gpu_id: int = 0, tokenizer_size: int | None = None
) -> tuple[Backend, list[str]]:
    """Load the first backend in `settings.backend`'s preference order that can run here, each with
    its own options from `settings`.

    Returns the loaded backend and the reasons the ones before it were skipped (each also logged once).
    """
    skipped = []
    for name in backend_order(settings.backend):
        backend = BACKENDS[name](model_dir, spec, settings.options_for(name), gpu_id=gpu_id, tokenizer_size=tokenizer_size)
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
    raise BackendUnavailable(f"no backend could be loaded: {'; '.join(skipped)}")
