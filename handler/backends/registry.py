"""The one list of backends: name, class, options, whether it needs a GPU, and its concurrency contract.

Settings (`HandlerSettings`), selection (`choose_backend`) and the base class (`Backend`) read this table;
nothing else lists backend names. Importing it imports no backend module (no torch, no tensorrt).

Concurrency contract (`concurrent_infer`): True means `Backend.infer` may be called from several threads
at once and each call gets the answer it would get alone; False means the backend keeps state shared by
calls (static CUDA-graph buffers, one TensorRT execution context), so `Backend.infer` takes the backend's
lock and calls run one at a time. Callers keep such a GPU busy by preparing the next batch (tokenizing)
while one runs: tokenizing happens outside the lock.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from handler.backends.options import OnnxRuntimeOptions, TensorRTOptions, TorchCpuOptions, TorchCudaOptions
from handler.errors import SettingsError


@dataclass(frozen=True)
class BackendEntry:
    """One backend: its class lives in `handler.backends.<name>`."""

    name: str
    class_name: str
    options_type: type
    #: runs only in a worker the server gave a GPU (`gpu_id`)
    needs_gpu: bool
    #: may `infer` run in two threads at once (see the module docstring)
    concurrent_infer: bool
    #: why, in one sentence (README's backend table and `describe()`)
    concurrency_note: str

    @property
    def module(self) -> str:
        """The module that defines the backend class."""
        return f"handler.backends.{self.name}"

    def load_class(self) -> type:
        """The backend class; its module is imported now (the torch-based ones import torch)."""
        return getattr(importlib.import_module(self.module), self.class_name)


#: in preference order: "auto" tries them top to bottom
BACKENDS: tuple[BackendEntry, ...] = (
    BackendEntry("tensorrt", "TensorRTBackend", TensorRTOptions, needs_gpu=True, concurrent_infer=False,
                 concurrency_note="one execution context holds the bound shapes and addresses: calls are serialised"),
    BackendEntry("torch_cuda", "TorchCudaBackend", TorchCudaOptions, needs_gpu=True, concurrent_infer=False,
                 concurrency_note="CUDA graphs replay static input/output buffers from one memory pool: calls are serialised"),
    BackendEntry("onnxruntime", "OnnxRuntimeBackend", OnnxRuntimeOptions, needs_gpu=False, concurrent_infer=True,
                 concurrency_note="InferenceSession.run is documented thread-safe; every call has its own buffers"),
    BackendEntry("torch_cpu", "TorchCpuBackend", TorchCpuOptions, needs_gpu=False, concurrent_infer=True,
                 concurrency_note="an eval-mode module under inference_mode keeps no state between calls"),
)  # fmt: skip

BACKEND_NAMES: tuple[str, ...] = tuple(entry.name for entry in BACKENDS)


def backend_entry(name: str) -> BackendEntry:
    """The registry entry of backend `name`, or a `SettingsError` listing the known ones."""
    for entry in BACKENDS:
        if entry.name == name:
            return entry
    raise SettingsError(f"unknown backend {name!r}; choose one of: {', '.join(BACKEND_NAMES)}")
