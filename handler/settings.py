"""The `handler:` section of model-config.yaml, validated with errors that say how to fix it."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from handler.payload import DEFAULT_MAX_TEXTS_PER_REQUEST

CUDA_DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class HandlerSettings:
    """Settings read from ``handler:`` in model-config.yaml; None means "use the default"."""

    #: "auto" (TensorRT > torch on CUDA > torch on CPU) or one backend name
    backend: str = "auto"
    #: truncate texts to this many tokens (None: the spec's max_length)
    max_length: int | None = None
    #: torch CPU threads per worker (None: CPU cores / minWorkers)
    num_threads: int | None = None
    #: largest list of texts one request may carry
    max_texts_per_request: int = DEFAULT_MAX_TEXTS_PER_REQUEST
    #: weights dtype of the torch CUDA backend
    cuda_dtype: str = "float16"
    #: torch CUDA backend: one CUDA graph per (batch, sequence) bucket, captured at start
    cuda_graphs: bool = True
    #: torch CUDA backend: run handler/fused_bert.py (fewer, larger kernels) for plain BERT checkpoints
    cuda_fused: bool = True
    #: torch CUDA backend: torch.compile before capturing the graphs (slow start, faster kernels)
    cuda_compile: bool = False
    #: onnxruntime backend: run model.int8.onnx (per-channel int8 weights) instead of model.onnx
    onnx_int8: bool = False
    #: torch_cpu backend: dynamic int8 quantization (per-channel weights) of the Linear layers
    torch_int8: bool = False
    #: CPU backends: at most this many texts per forward pass (length-sorted), None: whole batch
    cpu_sub_batch: int | None = None

    @classmethod
    def from_model_yaml(cls, model_yaml: dict | None) -> "HandlerSettings":
        """Read ``model_yaml["handler"]``; unknown keys are an error naming the known ones."""
        section = dict((model_yaml or {}).get("handler") or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown handler settings {unknown} in model-config.yaml; known: {sorted(known)}")
        for key in ("max_length", "num_threads", "max_texts_per_request", "cpu_sub_batch"):
            if section.get(key) in ("auto", "", None):
                section.pop(key, None)
            elif isinstance(section[key], bool) or not isinstance(section[key], int) or section[key] < 1:
                raise ValueError(f"handler setting {key} must be a positive integer, got {section[key]!r}")
        if section.get("max_length") is not None and not 8 <= section["max_length"] <= 512:
            raise ValueError(f"handler setting max_length must be within 8..512, got {section['max_length']}")
        if section.get("cuda_dtype", "float16") not in CUDA_DTYPES:
            raise ValueError(f"handler setting cuda_dtype must be one of {CUDA_DTYPES}, got {section['cuda_dtype']!r}")
        for key in ("cuda_graphs", "cuda_fused", "cuda_compile", "onnx_int8", "torch_int8"):
            if not isinstance(section.get(key, False), bool):
                raise ValueError(f"handler setting {key} must be true or false, got {section[key]!r}")
        if section.get("cuda_compile") and section.get("cuda_graphs") is False:
            raise ValueError("handler setting cuda_compile needs cuda_graphs: true (compiled shapes are the graph buckets)")
        return cls(**section)

    def threads_per_worker(self, workers: int | None) -> int:
        """CPU threads for one worker: the configured number, else the cores this process may use
        divided among minWorkers (workers added later through the management API are not counted:
        set num_threads when you scale beyond minWorkers)."""
        if self.num_threads:
            return self.num_threads
        return max(1, usable_cores() // max(1, workers or 1))


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity / cgroup cpusets), falling back to os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
