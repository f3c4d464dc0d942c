"""Inference backends: one interface (`Backend`), four implementations, chosen once at start.

Public API: `Backend`, `BackendUnavailable`, `choose_backend`, `backend_order`, `BACKENDS` and the
backend classes. Each backend module is imported here, so importing this package needs torch but
never `tensorrt` or `onnxruntime` (those load inside `Backend.load`).
"""

from handler.backends.base import Backend, CpuBackend, load_hf_classifier
from handler.backends.onnxruntime import OnnxRuntimeBackend
from handler.backends.selection import BACKENDS, backend_order, choose_backend
from handler.backends.tensorrt import TensorRTBackend
from handler.backends.torch_cpu import TorchCpuBackend
from handler.backends.torch_cuda import TorchCudaBackend
from handler.errors import BackendUnavailable

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "CpuBackend",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "TorchCpuBackend",
    "TorchCudaBackend",
    "backend_order",
    "choose_backend",
    "load_hf_classifier",
]
