"""Typed settings: the `handler:` section of model-config.yaml, with each backend's options
(`handler/backends/options.py`) grouped under the names of the backend registry.

The one place the server-wide defaults live. A backend built without options (in a test or a benchmark) gets
exactly these defaults, which are also what the server runs when model-config.yaml says nothing.
`build_mar.py` writes the whole section from a `HandlerSettings`, so an archive says what it runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace

# the options classes are re-exported: settings is where callers look for them
from handler.backends.options import (  # noqa: F401
    CUDA_DTYPES,
    DEFAULT_CPU_SUB_BATCH,
    BackendOptions,
    CpuOptions,
    OnnxRuntimeOptions,
    TensorRTOptions,
    TorchCpuOptions,
    TorchCudaOptions,
    checked_value,
)
from handler.backends.registry import BACKEND_NAMES, backend_entry
from handler.errors import SettingsError
from handler.payload import DEFAULT_MAX_TEXTS_PER_REQUEST

#: what happens to a text longer than max_length tokens (handler/tokenizer.py:content_windows):
#: head keeps its beginning, tail its end, head+tail a quarter from the beginning and the rest from the end,
#: chunks classifies overlapping windows over all of it (at most max_chunks) and averages their probabilities
TRUNCATION_POLICIES = ("head", "tail", "head+tail", "chunks")
DEFAULT_MAX_CHUNKS = 8
#: which text of a pair gives up tokens when the pair is longer than max_length (the tokenizers library's
#: strategies): longest_first cuts the longer text first (both to half when both are long), only_first and
#: only_second cut that text only (when it cannot give up enough, where the library raises an error, the
#: pair is cut longest_first; the answer's truncated_side says which text lost tokens)
PAIR_TRUNCATION_POLICIES = ("longest_first", "only_first", "only_second")
#: the truncation policies a pair model may have: a pair is cut at the end of the side(s) its pair_truncation
#: names; tail, head+tail and chunks have no agreed meaning for two texts and are refused when the archive is built
PAIR_MODEL_TRUNCATION_POLICIES = ("head",)
#: a batch of 64 windows at max_length 128 is never split (the default model: no bound measured no faster on the
#: H200, bench/results/h200_host_path/); a model with max_length 512 gets a long text's window in a call of its own
DEFAULT_MAX_BATCH_TOKENS = 8192
#: texts whose predictions a worker remembers, ~0.5 KB each with the text (handler/prediction_cache.py); on the
#: H200, -2.5% when no text repeats, 2.0x on texts drawn Zipf(1.1) (bench/results/h200_host_path/)
DEFAULT_RESPONSE_CACHE_SIZE = 10_000
#: flat model-config.yaml key -> the (backend, option) pairs it sets, and its kind
BACKEND_YAML_KEYS: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "num_threads": ((("torch_cpu", "num_threads"), ("onnxruntime", "num_threads")), "optional_count"),
    "cpu_sub_batch": ((("torch_cpu", "sub_batch"), ("onnxruntime", "sub_batch")), "optional_count"),
    "torch_int8": ((("torch_cpu", "int8"),), "flag"),
    "onnx_int8": ((("onnxruntime", "int8"),), "flag"),
    "onnx_spinning": ((("onnxruntime", "spinning"),), "flag"),
    "cuda_dtype": ((("torch_cuda", "dtype"),), "cuda_dtype"),
    "cuda_graphs": ((("torch_cuda", "graphs"),), "flag"),
    "cuda_fused": ((("torch_cuda", "fused"),), "flag"),
    "cuda_compile": ((("torch_cuda", "compile"),), "flag"),
    "cuda_packing": ((("torch_cuda", "packing"),), "flag"),
}
#: values that mean "use the default" for a count (for cpu_sub_batch, null means "the whole batch in one pass")
AUTO_VALUES = ("auto", "")


@dataclass(frozen=True)
class HandlerSettings:
    """The `handler:` section of model-config.yaml, grouped per backend."""

    #: "auto" (TensorRT > torch on CUDA > ONNX Runtime > torch on CPU) or one backend name
    backend: str = "auto"
    #: truncate texts to this many tokens (None: the spec's max_length)
    max_length: int | None = None
    #: largest list of texts one request may carry
    max_texts_per_request: int = DEFAULT_MAX_TEXTS_PER_REQUEST
    #: one of TRUNCATION_POLICIES
    truncation: str = "head"
    #: pair models: which text of a pair is cut first (one of PAIR_TRUNCATION_POLICIES)
    pair_truncation: str = "longest_first"
    #: windows per text at most with truncation "chunks" (a longer text is cut after them, and says so)
    max_chunks: int = DEFAULT_MAX_CHUNKS
    #: padded tokens (windows x the longest window) one backend call may hold, so that a long text never drags
    #: short ones to its length (text-embeddings-inference's --max-batch-tokens); None: only the count bounds it
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS
    #: texts whose predictions the worker remembers (answers are batch-invariant; 0: off)
    response_cache_size: int = DEFAULT_RESPONSE_CACHE_SIZE
    # one field per registry entry, named after it (tests/handler/test_backend_registry.py checks the match)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)
    torch_cuda: TorchCudaOptions = field(default_factory=TorchCudaOptions)
    onnxruntime: OnnxRuntimeOptions = field(default_factory=OnnxRuntimeOptions)
    torch_cpu: TorchCpuOptions = field(default_factory=TorchCpuOptions)

    def __post_init__(self):
        if self.backend != "auto" and self.backend not in BACKEND_NAMES:
            raise SettingsError(f"unknown backend {self.backend!r} in model-config.yaml; choose one of: auto, {', '.join(BACKEND_NAMES)}")
        for name in BACKEND_NAMES:
            options = getattr(self, name)
            if not isinstance(options, backend_entry(name).options_type):
                raise SettingsError(f"settings for backend {name} must be {backend_entry(name).options_type.__name__}, got {type(options).__name__}")
        checked_value("max_length", self.max_length, "optional_count")
        checked_value("max_texts_per_request", self.max_texts_per_request, "count")
        checked_value("max_chunks", self.max_chunks, "count")
        checked_value("max_batch_tokens", self.max_batch_tokens, "optional_count")
        if isinstance(self.response_cache_size, bool) or not isinstance(self.response_cache_size, int) or self.response_cache_size < 0:
            raise SettingsError(f"handler setting response_cache_size must be a whole number >= 0 (0 turns the cache off), got {self.response_cache_size!r}")
        if self.truncation not in TRUNCATION_POLICIES:
            raise SettingsError(f"handler setting truncation must be one of {TRUNCATION_POLICIES}, got {self.truncation!r}")
        if self.pair_truncation not in PAIR_TRUNCATION_POLICIES:
            raise SettingsError(f"handler setting pair_truncation must be one of {PAIR_TRUNCATION_POLICIES}, got {self.pair_truncation!r}")
        if self.max_length is not None and not 8 <= self.max_length <= 512:
            raise SettingsError(f"handler setting max_length must be within 8..512, got {self.max_length}")

    def options_for(self, backend_name: str) -> BackendOptions:
        """The typed options of one backend."""
        return getattr(self, backend_entry(backend_name).name)

    def for_workers(self, workers: int | None) -> "HandlerSettings":
        """These settings with the CPU thread count resolved for one of `workers` workers: the configured
        number, else the cores this process may use divided among them (workers added later through the
        management API are not counted: set num_threads when you scale beyond minWorkers). ONNX Runtime
        without spinning is the exception: its idle threads sleep, so each worker gets every core; a lone
        request then runs on all of them, and loaded workers share them."""
        shared = max(1, usable_cores() // max(1, workers or 1))
        onnx_threads = shared if self.onnxruntime.spinning else usable_cores()
        return replace(
            self,
            torch_cpu=replace(self.torch_cpu, num_threads=self.torch_cpu.num_threads or shared),
            onnxruntime=replace(self.onnxruntime, num_threads=self.onnxruntime.num_threads or onnx_threads),
        )

    @classmethod
    def from_model_yaml(cls, model_yaml: dict | None) -> "HandlerSettings":
        """Read ``model_yaml["handler"]``; unknown keys and bad values are errors naming the fix."""
        section = dict((model_yaml or {}).get("handler") or {})
        top_level = {f.name for f in fields(cls) if f.name not in BACKEND_NAMES}
        unknown = sorted(set(section) - top_level - set(BACKEND_YAML_KEYS))
        if unknown:
            raise SettingsError(f"unknown handler settings {unknown} in model-config.yaml; known: {sorted(top_level | set(BACKEND_YAML_KEYS))}")
        for key in ("max_length", "max_texts_per_request"):
            if key in section and section[key] in (*AUTO_VALUES, None):
                section.pop(key)
        groups: dict[str, dict] = {name: {} for name in BACKEND_NAMES}
        for key, (targets, kind) in BACKEND_YAML_KEYS.items():
            if key not in section:
                continue
            value = section.pop(key)
            if kind == "optional_count" and value in AUTO_VALUES:
                continue
            checked_value(key, value, kind)
            for backend_name, option in targets:
                groups[backend_name][option] = value
        defaults = cls()
        options = {name: replace(getattr(defaults, name), **values) for name, values in groups.items()}
        return cls(**section, **options)

    def to_model_yaml(self) -> dict:
        """The flat `handler:` section that `from_model_yaml` reads back into these settings."""
        section: dict = {
            "backend": self.backend, "max_length": self.max_length, "max_texts_per_request": self.max_texts_per_request,
            "truncation": self.truncation, "pair_truncation": self.pair_truncation, "max_chunks": self.max_chunks, "response_cache_size": self.response_cache_size, "max_batch_tokens": self.max_batch_tokens,
        }  # fmt: skip
        for key, (targets, _) in BACKEND_YAML_KEYS.items():
            backend_name, option = targets[0]
            section[key] = getattr(getattr(self, backend_name), option)
        return section


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity / cgroup cpusets), falling back to os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
