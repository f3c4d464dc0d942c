"""The backend interface: one lifecycle, several implementations, chosen once at start.

Style after Polygraphy's runners: the public `load` / `infer` / `close` methods hold the state
checks and call small `_load_impl` / `_warm_up_impl` / `_infer_impl` / `_close_impl` methods that
subclasses fill in. A backend that cannot run here raises `BackendUnavailable` from `load` with
one sentence saying why; `choose_backend` logs it and tries the next one.

Every backend takes int64 numpy arrays named after `ModelSpec.input_names` and returns float32
numpy logits of shape [batch, num_labels]. This module imports no torch: the torch-based backends
convert at their own boundary (`handler.backends.torch_io`), so an ONNX Runtime worker never loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from handler import layout
from handler.errors import BackendUnavailable
from handler.settings import BackendOptions, CpuOptions
from handler.spec import ModelSpec

#: the backends that need the GPU the server gave the worker (`gpu_id`)
GPU_BACKENDS = ("tensorrt", "torch_cuda")
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

    name: ClassVar[str] = "base"
    #: the options class this backend takes; None builds it with the defaults
    options_type: ClassVar[type] = type(None)

    def __init__(self, model_dir: str | Path, spec: ModelSpec, options: BackendOptions | None = None, *, gpu_id: int | None = None, tokenizer_size: int | None = None):
        if options is None:
            options = self.options_type()
        if not isinstance(options, self.options_type):
            raise TypeError(f"backend {self.name} takes {self.options_type.__name__}, got {type(options).__name__}")
        self.model_dir = Path(model_dir)
        self.spec = spec
        self.options = options
        self.gpu_id = gpu_id
        self.tokenizer_size = tokenizer_size
        self.loaded = False
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
        if self.name in GPU_BACKENDS and self.gpu_id is None:
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
        """Run one batch of int64 arrays; returns float32 logits [batch, num_labels]."""
        if not self.loaded:
            raise RuntimeError(f"backend {self.name} used before load()")
        missing = [name for name in self.spec.input_names if name not in inputs]
        if missing:
            raise ValueError(f"backend {self.name} is missing inputs {missing}")
        return np.asarray(self._infer_impl(inputs), dtype=np.float32)

    def close(self) -> None:
        """Release what `load` took; safe to call twice."""
        if self.loaded:
            self._close_impl()
            self.loaded = False

    def describe(self) -> dict:
        """Facts worth logging about the loaded backend."""
        return {"backend": self.name}

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
