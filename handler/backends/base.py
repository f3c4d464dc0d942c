"""The backend interface: one lifecycle, several implementations, chosen once at start.

Style after Polygraphy's runners: the public `load` / `infer` / `close` methods hold the state
checks and call small `_load_impl` / `_warm_up_impl` / `_infer_impl` / `_close_impl` methods that
subclasses fill in. A backend that cannot run here raises `BackendUnavailable` from `load` with
one sentence saying why; `choose_backend` logs it and tries the next one.

Concurrency: `handler/backends/registry.py` says per backend whether `infer` may run in two threads at
once (`concurrent_infer`). Where it may not, `infer` holds the backend's lock around `_infer_impl`, so any
caller (the TorchServe worker, the KServe server's in-flight batches, a benchmark's threads) gets the
answer it would get alone; a subclass never has to lock for itself.

Every backend takes int64 numpy arrays named after `ModelSpec.input_names` and returns float32
numpy logits of shape [batch, num_labels]. This module imports no torch: the torch-based backends
convert at their own boundary (`handler.backends.torch_io`), so an ONNX Runtime worker never loads it.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path
from typing import ClassVar

import numpy as np

from handler import layout
from handler.backends.options import BackendOptions, CpuOptions
from handler.backends.registry import BackendEntry, backend_entry
from handler.errors import BackendUnavailable
from handler.spec import ModelSpec

#: why a GPU backend is skipped in a worker that the server gave no GPU
NO_GPU_ASSIGNED = "the server assigned this worker no GPU (TorchServe: no GPU visible, or number_of_gpu=0)"

#: sequence length of the warm-up batch (two rows of [PAD] ids, attended)
WARM_UP_TOKENS = 8


class Backend:
    """Base class: lifecycle checks here, the work in the `_impl` methods.

    `options` is the backend's own typed options object (None: the server's defaults);
    `gpu_id` and `tokenizer_size` are facts of the worker, used by the GPU backends (`gpu_id` None:
    the server gave this worker no GPU).
    """

    #: the backend's name in the registry (a subclass for tests may reuse a registered name)
    name: ClassVar[str] = "base"

    def __init__(self, model_dir: str | Path, spec: ModelSpec, options: BackendOptions | None = None, *, gpu_id: int | None = None, tokenizer_size: int | None = None):
        self.entry: BackendEntry = backend_entry(self.name)
        options_type = self.entry.options_type
        if options is None:
            options = options_type()
        if not isinstance(options, options_type):
            raise TypeError(f"backend {self.name} takes {options_type.__name__}, got {type(options).__name__}")
        self.model_dir = Path(model_dir)
        self.spec = spec
        self.options = options
        self.gpu_id = gpu_id
        self.tokenizer_size = tokenizer_size
        self.loaded = False
        #: held around `_infer_impl` when the registry says this backend cannot run two calls at once
        self.infer_lock = nullcontext() if self.entry.concurrent_infer else threading.Lock()
        #: largest batch one `infer` call accepts (None: any); bigger batches are split by the caller
        self.max_batch_size: int | None = None
        #: longest sequence the backend accepts (None: the spec's max_length)
        self.max_sequence_length: int | None = None

    @property
    def chunk_size(self) -> int | None:
        """Most texts per `infer` call (None: any number)."""
        return self.max_batch_size

    def load(self) -> "Backend":
        """Prepare the backend and run its warm-up; raises `BackendUnavailable` if it cannot run here."""
        if self.loaded:
            return self
        if self.entry.needs_gpu and self.gpu_id is None:
            raise BackendUnavailable(NO_GPU_ASSIGNED)
        self._load_impl()
        self.loaded = True
        try:
            self._warm_up_impl()
        except BaseException:
            self.close()
            raise
        return self

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch of int64 arrays; returns float32 logits [batch, num_labels]. Safe from several
        threads: a backend that cannot run calls concurrently runs them one at a time (`infer_lock`)."""
        if not self.loaded:
            raise RuntimeError(f"backend {self.name} used before load()")
        missing = [name for name in self.spec.input_names if name not in inputs]
        if missing:
            raise ValueError(f"backend {self.name} is missing inputs {missing}")
        with self.infer_lock:
            return np.asarray(self._infer_impl(inputs), dtype=np.float32)

    def close(self) -> None:
        """Release what `load` took; safe to call twice."""
        if self.loaded:
            self._close_impl()
            self.loaded = False

    def describe(self) -> dict:
        """Facts worth logging about the loaded backend."""
        return {"backend": self.name}

    @classmethod
    def options_class(cls) -> type:
        """The options class the registry names for this backend."""
        return backend_entry(cls.name).options_type

    def _load_impl(self) -> None:
        raise NotImplementedError

    def _warm_up_impl(self) -> None:
        """Run once after loading, through `infer`, so that no request pays for first-call costs (allocations,
        ONNX Runtime's lazy initialisation): the worker reports ready only after this answered."""
        ids = np.zeros((2, WARM_UP_TOKENS), dtype=np.int64)
        self.infer({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})

    def _infer_impl(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _close_impl(self) -> None:
        pass


class CpuBackend(Backend):
    """A CPU backend: it honours `CpuOptions.sub_batch` (smaller, length-sorted forward passes)."""

    options: CpuOptions

    @property
    def chunk_size(self) -> int | None:
        limits = [size for size in (self.max_batch_size, self.options.sub_batch) if size]
        return min(limits) if limits else None


def load_hf_classifier(model_dir: str | Path, **kwargs):
    """The archive's Hugging Face sequence classifier in eval mode (never the hub); `kwargs` go to `from_pretrained`."""
    from transformers import AutoModelForSequenceClassification

    checkpoint = Path(model_dir) / layout.CHECKPOINT_DIR
    if not (checkpoint / "config.json").is_file():
        raise BackendUnavailable(f"no checkpoint at {checkpoint}: rebuild the .mar with build_mar.py --checkpoint DIR")
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, local_files_only=True, **kwargs)
    return model.eval()
