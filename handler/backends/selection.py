"""Which backend runs: the preference order, and the fallback with one logged reason per refusal.

Backend modules are imported only when their backend is tried, and the GPU backends are not tried
in a worker without a GPU: a CPU worker running ONNX Runtime never imports torch (or tensorrt).
"""

from __future__ import annotations

import logging
from pathlib import Path

from handler.backends.base import NO_GPU_ASSIGNED, Backend
from handler.backends.registry import BACKEND_NAMES, backend_entry
from handler.errors import BackendUnavailable, SettingsError
from handler.settings import HandlerSettings
from handler.spec import ModelSpec

logger = logging.getLogger(__name__)


def backend_class(name: str) -> type[Backend]:
    """The class of backend `name`; its module is imported now (the torch-based ones import torch)."""
    return backend_entry(name).load_class()


def backend_order(preference: str) -> list[str]:
    """Backends to try: "auto" is TensorRT > torch on CUDA > ONNX Runtime on CPU > torch on CPU;
    a named one falls back along that order."""
    if preference == "auto":
        return list(BACKEND_NAMES)
    if preference not in BACKEND_NAMES:
        raise SettingsError(f"unknown backend {preference!r} in model-config.yaml; choose one of: auto, {', '.join(BACKEND_NAMES)}")
    return list(BACKEND_NAMES[BACKEND_NAMES.index(preference) :])


def choose_backend(
    settings: HandlerSettings, model_dir: str | Path, spec: ModelSpec, *, gpu_id: int | None, tokenizer_size: int | None = None
) -> tuple[Backend, list[str]]:
    """Load the first backend in `settings.backend`'s preference order that can run here, each with
    its own options from `settings`. `gpu_id` is the worker's GPU (None: no GPU, the GPU backends are skipped).

    Returns the loaded backend and the reasons the ones before it were skipped (each also logged once).
    """
    skipped = []
    for name in backend_order(settings.backend):
        if backend_entry(name).needs_gpu and gpu_id is None:  # not even imported: a CPU worker never loads torch
            message = f"backend {name} skipped: {NO_GPU_ASSIGNED}"
            logger.info(message)
            skipped.append(message)
            continue
        backend = backend_class(name)(model_dir, spec, settings.options_for(name), gpu_id=gpu_id, tokenizer_size=tokenizer_size)
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
