"""Each backend's typed options: what model-config.yaml's `handler:` section may set per backend.

The one place their defaults live. `handler/backends/registry.py` names each backend's options class;
`handler/settings.py` groups them into `HandlerSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass

from handler.errors import SettingsError

#: float8: FP8 e4m3 projections with calibrated scales (GPUs with FP8 tensor cores and an archive with
#: fp8_scales.json; elsewhere the backend runs float16 and says so in its description)
CUDA_DTYPES = ("float16", "bfloat16", "float32", "float8")
#: bench/inprocess_cpu.py: length-sorted forward passes of 8 texts are +9% over one pass per batch on 2 cores
DEFAULT_CPU_SUB_BATCH = 8


def checked_value(name: str, value, kind: str):
    """`value` if it is a valid `kind` ("flag", "count", "optional_count", "cuda_dtype"), else a `SettingsError`."""
    if kind == "flag" and not isinstance(value, bool):
        raise SettingsError(f"handler setting {name} must be true or false, got {value!r}")
    if kind in ("count", "optional_count"):
        if value is None and kind == "optional_count":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingsError(f"handler setting {name} must be a positive integer, got {value!r}")
    if kind == "cuda_dtype" and value not in CUDA_DTYPES:
        raise SettingsError(f"handler setting {name} must be one of {CUDA_DTYPES}, got {value!r}")
    return value


@dataclass(frozen=True)
class CpuOptions:
    """What both CPU backends take."""

    #: intra-op threads (None: every core this process may use; the handler divides them among workers)
    num_threads: int | None = None
    #: at most this many texts per forward pass, length-sorted (None: the whole batch in one pass)
    sub_batch: int | None = DEFAULT_CPU_SUB_BATCH

    def __post_init__(self):
        checked_value("num_threads", self.num_threads, "optional_count")
        checked_value("sub_batch", self.sub_batch, "optional_count")


@dataclass(frozen=True)
class TorchCpuOptions(CpuOptions):
    """Eager PyTorch on the CPU."""

    #: dynamic int8 quantization (per-channel weights) of the Linear layers
    int8: bool = False

    def __post_init__(self):
        super().__post_init__()
        checked_value("int8", self.int8, "flag")


@dataclass(frozen=True)
class OnnxRuntimeOptions(CpuOptions):
    """ONNX Runtime on the CPU."""

    #: run model.int8.onnx (per-channel int8 weights) instead of model.onnx
    int8: bool = True
    #: intra-op threads spin while waiting for work (ONNX Runtime's default). Off (shipped): idle threads
    #: sleep, so two workers with every core each do not fight (see `HandlerSettings.for_workers`)
    spinning: bool = False

    def __post_init__(self):
        super().__post_init__()
        checked_value("int8", self.int8, "flag")
        checked_value("onnx_spinning", self.spinning, "flag")


@dataclass(frozen=True)
class TorchCudaOptions:
    """PyTorch on one CUDA device."""

    #: weights and activations dtype (float8: the encoder's projections in FP8, the rest float16)
    dtype: str = "float16"
    #: one CUDA graph per (batch, sequence) bucket, captured at start
    graphs: bool = True
    #: run handler/kernels/fused_bert.py (seven kernels per layer) for plain BERT checkpoints
    fused: bool = True
    #: torch.compile before capturing the graphs (slow start, no faster than `fused` on an H100)
    compile: bool = False
    #: large padded batches run packed: the fused module's GEMMs on real tokens only (eagerly, no graph)
    packing: bool = False

    def __post_init__(self):
        checked_value("cuda_dtype", self.dtype, "cuda_dtype")
        for name in ("graphs", "fused", "compile", "packing"):
            checked_value(f"cuda_{name}", getattr(self, name), "flag")
        if self.compile and not self.graphs:
            raise SettingsError("handler setting cuda_compile needs cuda_graphs: true (compiled shapes are the graph buckets)")


@dataclass(frozen=True)
class TensorRTOptions:
    """TensorRT engine from the archive (its profile and precision come from the engine itself)."""


BackendOptions = TorchCpuOptions | OnnxRuntimeOptions | TorchCudaOptions | TensorRTOptions
