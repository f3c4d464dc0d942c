"""Inference backends: one interface, several implementations, chosen once at start.

Style after Polygraphy's runners: the public `load` / `infer` / `close` methods hold the
state checks and call small `_load_impl` / `_infer_impl` / `_close_impl` methods that
subclasses fill in. A backend that cannot run here raises `BackendUnavailable` from
`load` with one sentence saying why; `choose_backend` logs it and tries the next one.

Every backend takes int64 CPU tensors named after `ModelSpec.input_names` and returns
float32 CPU logits of shape [batch, num_labels].
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from handler.spec import ModelSpec

CHECKPOINT_SUBDIR = "model"
INT8_ONNX_FILE = "model.int8.onnx"

logger = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """This backend cannot run on this machine; the message says why (and how to fix it)."""


class Backend:
    """Base class: lifecycle checks here, the work in the `_impl` methods."""

    name = "base"
    #: largest batch one `infer` call accepts (None: any); bigger batches are split by the caller
    max_batch_size: int | None = None
    #: longest sequence the backend accepts (None: the spec's max_length)
    max_sequence_length: int | None = None

    #: CPU backends honour the ``sub_batch`` option (smaller, length-sorted forward passes)
    uses_sub_batches = False

    @property
    def chunk_size(self) -> int | None:
        """Most texts per `infer` call: max_batch_size, or the ``sub_batch`` option where it applies."""
        sub_batch = self.options.get("sub_batch") if self.uses_sub_batches else None
        limits = [size for size in (self.max_batch_size, sub_batch) if size]
        return min(limits) if limits else None

    def __init__(self, model_dir: str | Path, spec: ModelSpec, options: dict | None = None):
        self.model_dir = Path(model_dir)
        self.spec = spec
        self.options = dict(options or {})
        self.loaded = False

    def load(self) -> "Backend":
        """Prepare the backend; raises `BackendUnavailable` if it cannot run here."""
        if self.loaded:
            return self
        self._load_impl()
        self.loaded = True
        return self

    def infer(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run one batch; returns float32 CPU logits [batch, num_labels]."""
        if not self.loaded:
            raise RuntimeError(f"backend {self.name} used before load()")
        missing = [name for name in self.spec.input_names if name not in inputs]
        if missing:
            raise ValueError(f"backend {self.name} is missing inputs {missing}")
        return self._infer_impl(inputs)

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

    def _infer_impl(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _close_impl(self) -> None:
        pass


def _load_hf_classifier(model_dir: Path, **kwargs):
    from transformers import AutoModelForSequenceClassification

    checkpoint = model_dir / CHECKPOINT_SUBDIR
    if not (checkpoint / "config.json").is_file():
        raise BackendUnavailable(f"no checkpoint at {checkpoint}: rebuild the .mar with build_mar.py --checkpoint DIR")
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, local_files_only=True, **kwargs)
    return model.eval()


class TorchCpuBackend(Backend):
    """Eager PyTorch on the CPU; the fallback that always works.

    Options: ``num_threads`` (default: all cores), ``torch_int8`` (dynamic int8 quantization of
    the Linear layers: weights int8, activations quantized per batch; accuracy change is reported
    by bench/inprocess_cpu.py), ``sub_batch`` (texts per forward pass, length-sorted).
    """

    name = "torch_cpu"
    uses_sub_batches = True

    def _load_impl(self) -> None:
        threads = int(self.options.get("num_threads") or os.cpu_count() or 1)
        torch.set_num_threads(max(1, threads))
        self.model = _load_hf_classifier(self.model_dir, dtype=torch.float32)
        if self.options.get("torch_int8"):
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            self.model = quantize_dynamic(self.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)

    def _infer_impl(self, inputs):
        with torch.inference_mode():
            return self.model(**{name: inputs[name] for name in self.spec.input_names}).logits.float()

    def describe(self):
        return {"backend": self.name, "threads": torch.get_num_threads(), "int8": bool(self.options.get("torch_int8"))}


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU, running the ``model.onnx`` packed in the .mar.

    Options: ``num_threads``, ``onnx_int8`` (use ``model.int8.onnx``, made by
    ``export.onnx_export --int8``), ``sub_batch``.
    """

    name = "onnxruntime"
    uses_sub_batches = True

    def _load_impl(self) -> None:
        file_name = INT8_ONNX_FILE if self.options.get("onnx_int8") else self.spec.onnx_file
        path = self.model_dir / file_name
        if not path.is_file():
            hint = "export.onnx_export --int8" if self.options.get("onnx_int8") else "build_mar.py --export-dir"
            raise BackendUnavailable(f"no {file_name} in the .mar (make it with {hint})")
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed in the worker's environment") from None
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = int(self.options.get("num_threads") or os.cpu_count() or 1)
        session_options.inter_op_num_threads = 1
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
        self.file_name = file_name

    def _infer_impl(self, inputs):
        feeds = {name: inputs[name].numpy() for name in self.spec.input_names}
        (logits,) = self.session.run([self.spec.output_name], feeds)
        return torch.from_numpy(logits)

    def describe(self):
        return {"backend": self.name, "model": self.file_name, "threads": self.session.get_session_options().intra_op_num_threads}


class TorchCudaBackend(Backend):
    """PyTorch on one CUDA device: fp16 weights, SDPA attention, `inference_mode`, warmed up at load.

    Options: ``gpu_id`` (from TorchServe), ``dtype`` ("float16" default, "bfloat16", "float32"),
    ``cuda_graphs`` (capture one CUDA graph per (batch, sequence) bucket; inputs are padded up to
    the bucket, which removes the per-kernel launch cost that dominates small batches),
    ``fused`` (run `FusedBertClassifier`, seven kernels per layer, instead of the Hugging Face
    module; models it does not reproduce fall back to the Hugging Face module with a log line),
    ``tokenizer_size`` (the handler's tokenizer length; the fused module refuses a larger one),
    ``compile`` (torch.compile the model before capturing: 7-14 s of compilation per bucket at
    start on an H100, and no faster than the fused module alone; see bench/gpu_kernel_probe.py).
    """

    name = "torch_cuda"
    BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
    SEQUENCE_BUCKETS = (16, 32, 64, 128, 256, 512)

    def _load_impl(self) -> None:
        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device visible to this worker")
        gpu_id = int(self.options.get("gpu_id") or 0)
        # The CPU side of a GPU batch is a few small copies: more intra-op threads only spin. On an H100,
        # with PyTorch's default (one thread per core) one GPU worker under TorchServe used 8-11 cores
        # and four workers took 28.5 ms per batch of 64 instead of 9.4 ms with one thread each
        # (bench/results/h100_torchserve/).
        torch.set_num_threads(1)
        torch.cuda.set_device(gpu_id)
        self.device = torch.device("cuda", gpu_id)
        dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[self.options.get("dtype") or "float16"]
        self.model, self.forward_logits = self._build_model(dtype)
        if self.options.get("compile"):
            self.forward_logits = torch.compile(self.forward_logits, dynamic=False)
        self.use_graphs = bool(self.options.get("cuda_graphs"))
        # batches without any padding get their own graphs without attention mask (SDPA's fastest kernels);
        # not for the Hugging Face module (slower without a mask) nor with compile (twice the compile time)
        self.unpadded_graphs = self.use_graphs and self.fused and not self.options.get("compile")
        self.graphs: dict[tuple[int, int, bool], _CapturedBatch] = {}
        self.graph_pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        seq_limit = self.spec.max_length
        self.sequence_buckets = tuple(b for b in self.SEQUENCE_BUCKETS if b < seq_limit) + (seq_limit,)
        if self.use_graphs:
            self.max_batch_size = self.BATCH_BUCKETS[-1]
        self.loaded = True  # warm-up goes through infer()
        self._warm_up()

    def _build_model(self, dtype: torch.dtype):
        """The module on the device and a function (input_ids, token_type_ids, attention_mask) -> logits;
        all three [batch, seq] on the device, mask nonzero for real tokens."""
        if self.options.get("fused", True):
            from handler.fused_bert import FusedBertClassifier, UnsupportedModel

            try:
                hf_model = _load_hf_classifier(self.model_dir, dtype=torch.float32)
                model = FusedBertClassifier.from_hf(hf_model, self.options.get("tokenizer_size"))
                self.fused = True
                return model.to(self.device, dtype).eval(), model
            except UnsupportedModel as reason:
                logger.info("fused BERT not used (%s); running the Hugging Face module", reason)
        model = _load_hf_classifier(self.model_dir, dtype=dtype, attn_implementation="sdpa").to(self.device)
        self.fused = False

        def hf_logits(input_ids, token_type_ids, attention_mask):
            # a 4-D boolean mask: transformers then skips its "is there padding?" check, which syncs with the host
            mask = attention_mask[:, None, None, :] != 0
            return model(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids).logits

        return model, hf_logits

    def _warm_up(self) -> None:
        """Run every shape bucket once (capturing its graph) so that no request pays for it."""
        batches = self.BATCH_BUCKETS if self.use_graphs else (1, 8)
        lengths = self.sequence_buckets if self.use_graphs else (self.sequence_buckets[-1],)
        for batch in batches:
            for length in lengths:
                ids = torch.full((batch, length), 100, dtype=torch.long)
                padded = torch.ones_like(ids)
                padded[:, -1] = 0
                for mask in (padded, torch.ones_like(ids)) if self.unpadded_graphs else (padded,):
                    self.infer({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
        torch.cuda.synchronize(self.device)

    def _infer_impl(self, inputs):
        if self.use_graphs:
            return self._infer_graphed(inputs)
        with torch.inference_mode():
            on_device = {name: inputs[name].to(self.device, non_blocking=True) for name in self.spec.input_names}
            return self.forward_logits(on_device["input_ids"], on_device["token_type_ids"], on_device["attention_mask"]).float().cpu()

    def _infer_graphed(self, inputs):
        batch, length = inputs["input_ids"].shape
        key = graph_key(inputs["attention_mask"], self.BATCH_BUCKETS, self.sequence_buckets, self.unpadded_graphs)
        captured = self.graphs.get(key)
        if captured is None:
            captured = self.graphs[key] = _CapturedBatch(self.forward_logits, key[:2], self.device, self.graph_pool, masked=key[2])
        return captured.run(inputs, batch, length)

    def describe(self):
        return {
            "backend": self.name,
            "device": torch.cuda.get_device_name(self.device),
            "dtype": str(self.model.dtype),
            "model": "fused BERT" if self.fused else "Hugging Face",
            "cuda_graphs": f"{len(self.graphs)} captured" if self.use_graphs else "off",
        }


def graph_key(attention_mask: torch.Tensor, batch_buckets: tuple[int, ...], sequence_buckets: tuple[int, ...], unpadded_graphs: bool) -> tuple[int, int, bool]:
    """(batch bucket, sequence bucket, masked?) of the graph that runs this batch. The graph without
    attention mask is only for a batch that fills its bucket exactly and has no padding at all."""
    batch, length = attention_mask.shape
    shape = (_bucket(batch, batch_buckets), _bucket(length, sequence_buckets))
    masked = not (unpadded_graphs and shape == (batch, length) and bool(attention_mask.all()))
    return (*shape, masked)


def _bucket(value: int, buckets: tuple[int, ...]) -> int:
    """Smallest bucket that holds `value`."""
    for bucket in buckets:
        if value <= bucket:
            return bucket
    raise ValueError(f"{value} exceeds the largest bucket {buckets[-1]}")


class _CapturedBatch:
    """One CUDA graph of `forward_logits` for a fixed (batch, sequence) shape, with static I/O buffers.

    The three inputs travel as one pinned int64 block [3, batch, sequence] (one host-to-device copy)
    and the logits become float32 inside the graph: a call is two copies and one replay.
    `masked=False` captures the model without attention mask: only for batches with no padding.
    """

    INPUT_ROWS = ("input_ids", "token_type_ids", "attention_mask")

    def __init__(self, forward_logits, shape: tuple[int, int], device: torch.device, pool, masked: bool = True):
        self.host = torch.zeros((len(self.INPUT_ROWS), *shape), dtype=torch.long).pin_memory()
        self.host[2, :, 0] = 1
        self.static = self.host.to(device)
        input_ids, token_type_ids, attention_mask = self.static.unbind(0)
        run = lambda: forward_logits(input_ids, token_type_ids, attention_mask if masked else None).float()  # noqa: E731
        with torch.inference_mode():
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    run()
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, pool=pool):
                self.logits = run()

    @classmethod
    def fill(cls, host: torch.Tensor, inputs: dict[str, torch.Tensor], batch: int, length: int) -> None:
        """Write a [batch, length] batch into the [3, bucket batch, bucket sequence] block; the rest is
        padding (zeros), and padding rows attend to their first position so that no row is all-masked.
        Done through numpy views: about half the time of the same torch indexing on the H100 machine's
        host (0.09 vs 0.16 ms at 128x128, 0.03 vs 0.06 ms at 1x128), time the GPU spends waiting."""
        block = host.numpy()
        block[:, batch:] = 0
        block[:, :batch, length:] = 0
        for row, name in enumerate(cls.INPUT_ROWS):
            block[row, :batch, :length] = inputs[name].numpy()
        block[2, batch:, 0] = 1

    def run(self, inputs, batch: int, length: int) -> torch.Tensor:
        self.fill(self.host, inputs, batch, length)
        self.static.copy_(self.host, non_blocking=True)
        self.graph.replay()
        return self.logits[:batch].cpu()
