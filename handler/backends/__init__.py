"""Inference backends: one interface (`Backend`), four implementations, chosen once at start.

Public API: `Backend`, `CpuBackend`, `BackendUnavailable`, `choose_backend`, `backend_order`,
`backend_class`, `load_hf_classifier`. Each backend class lives in the module named after it
(`handler.backends.onnxruntime.OnnxRuntimeBackend`, ...); importing this package imports none of
them, so it needs neither torch nor `tensorrt` nor `onnxruntime`.
"""

from handler.backends.base import Backend, CpuBackend, load_hf_classifier
from handler.backends.selection import BACKEND_CLASSES, backend_class, backend_order, choose_backend
from handler.errors import BackendUnavailable

__all__ = [
    "BACKEND_CLASSES",
    "Backend",
    "BackendUnavailable",
    "CpuBackend",
    "backend_class",
    "backend_order",
    "choose_backend",
    "load_hf_classifier",
]
