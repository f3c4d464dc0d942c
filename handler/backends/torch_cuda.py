"""PyTorch on one CUDA device: fp16 weights, the fused BERT module, CUDA graphs per shape bucket."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from handler.backends.base import Backend, load_hf_classifier
from handler.backends.cuda_graphs import CapturedBatch, ForwardLogits, graph_key
from handler.backends.torch_io import as_tensors
from handler.errors import BackendUnavailable
from handler.settings import TorchCudaOptions
from handler.spec import uses_token_types

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class CudaModel:
    """The module the torch_cuda backend runs, and its forward function."""

    module: torch.nn.Module
    #: (input_ids, token_type_ids, attention_mask) -> logits, all [batch, seq] on the device, mask nonzero for real tokens
    forward: ForwardLogits
    #: True: handler/kernels/fused_bert.py; False: the Hugging Face module
    fused: bool
    #: what runs, for describe(): "float16", or "float8 (e4m3 projections)", or "float16 (float8 asked: <why not>)"
    precision: str = ""
    #: config.json's model_type
    model_type: str = "bert"


#: families whose Hugging Face forward copies host tensors to the GPU (DeBERTa-v2's relative-position buckets):
#: CUDA graph capture refuses that, so they run eagerly
NO_CUDA_GRAPH_MODEL_TYPES = ("deberta-v2",)


def build_cuda_model(model_dir: str | Path, device: torch.device, dtype: torch.dtype, fused: bool = True, tokenizer_size: int | None = None) -> CudaModel:
    """The archive's classifier on `device` in `dtype`: the fused BERT module when asked for and the
    checkpoint is one it reproduces (else the Hugging Face module, with a log line saying why)."""
    if fused:
        from handler.kernels.fused_bert import FusedBertClassifier, UnsupportedModel

        try:
            hf_model = load_hf_classifier(model_dir, dtype=torch.float32)
            module = FusedBertClassifier.from_hf(hf_model, tokenizer_size).to(device, dtype).eval()
            return CudaModel(module, module, fused=True)
        except UnsupportedModel as reason:
            logger.info("fused BERT not used (%s); running the Hugging Face module", reason)
    try:
        model = load_hf_classifier(model_dir, dtype=dtype, attn_implementation="sdpa").to(device)
    except ValueError as refusal:  # e.g. DeBERTa-v2 has no SDPA attention in transformers: its own implementation then
        logger.info("SDPA attention not available (%s); the model's default attention", str(refusal).split(".")[0])
        model = load_hf_classifier(model_dir, dtype=dtype).to(device)

    token_types = uses_token_types(model.config.to_dict())

    def hf_logits(input_ids, token_type_ids, attention_mask):
        # a 4-D boolean mask: transformers then skips its "is there padding?" check, which syncs with the host
        mask = attention_mask[:, None, None, :] != 0
        if token_types:
            return model(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids).logits
        return model(input_ids=input_ids, attention_mask=mask).logits  # RoBERTa, DistilBERT, DeBERTa-v2: no segment input

    return CudaModel(model, hf_logits, fused=False, model_type=model.config.model_type)


def build_fp8_model(model_dir: str | Path, device: torch.device, tokenizer_size: int | None = None) -> CudaModel:
    """The fused BERT module with FP8 projections (handler/kernels/fp8_bert.py) on `device`; raises
    `Fp8Unavailable` without FP8 tensor cores or fp8_scales.json, `UnsupportedModel` for non-BERT checkpoints."""
    from handler import layout
    from handler.kernels.fp8_bert import Fp8BertClassifier, Fp8Calibration, Fp8Unavailable, fp8_capable
    from handler.kernels.fused_bert import FusedBertClassifier

    if not fp8_capable(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise Fp8Unavailable(f"{torch.cuda.get_device_name(device)} (sm {major}.{minor}) has no FP8 tensor cores (needs 8.9+)")
    calibration = Fp8Calibration.load(Path(model_dir) / layout.FP8_SCALES_FILE)
    fused = FusedBertClassifier.from_hf(load_hf_classifier(model_dir, dtype=torch.float32), tokenizer_size)
    module = Fp8BertClassifier(fused, calibration).to_device(device, torch.float16).eval()
    return CudaModel(module, module, fused=True, precision="float8 (e4m3 projections)")


class TorchCudaBackend(Backend):
    """PyTorch on the worker's GPU (`gpu_id`), warmed up at load.

    With ``graphs`` it captures one CUDA graph per (batch, sequence) bucket at start; inputs are padded
    up to the bucket, which removes the per-kernel launch cost that dominates small batches. With
    ``fused`` it runs `FusedBertClassifier` (seven kernels per layer); a checkpoint it does not reproduce,
    or a tokenizer larger than its embedding (`tokenizer_size`), runs the Hugging Face module instead.
    ``compile`` (torch.compile before capturing) costs 7-14 s per bucket at start on an H100 and is no
    faster than the fused module alone (bench/gpu_kernel_probe.py). With ``packing``, large batches with
    much padding run the fused module packed (`Packing`): its GEMMs only on the real tokens, eagerly.
    """

    name = "torch_cuda"
    options: TorchCudaOptions
    BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
    #: with `packing`: batches of at least this many texts whose real tokens are at most this share run packed
    #: (below, one graph launch beats the eager launches; above, there is little padding to drop)
    PACKING_MIN_BATCH = 32
    PACKING_MAX_REAL_SHARE = 0.85
    SEQUENCE_BUCKETS = (16, 32, 64, 128, 256, 512)

    def _load_impl(self) -> None:
        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device visible to this worker")
        # The CPU side of a GPU batch is a few small copies: more intra-op threads only spin. On an H100,
        # with PyTorch's default (one thread per core) one GPU worker under TorchServe used 8-11 cores
        # and four workers took 28.5 ms per batch of 64 instead of 9.4 ms with one thread each
        # (bench/results/h100_torchserve/).
        torch.set_num_threads(1)
        torch.cuda.set_device(self.gpu_id)
        self.device = torch.device("cuda", self.gpu_id)
        self.model = self._build_model()
        self.forward_logits = self.model.forward
        if self.options.compile:
            self.forward_logits = torch.compile(self.forward_logits, dynamic=False)
        self.use_graphs = self.options.graphs and self.model.model_type not in NO_CUDA_GRAPH_MODEL_TYPES
        if self.options.graphs and not self.use_graphs:
            logger.info("CUDA graphs off for model_type %s (its forward copies host tensors, which capture refuses)", self.model.model_type)
        # batches without any padding get their own graphs without attention mask (SDPA's fastest kernels);
        # not for the Hugging Face module (slower without a mask) nor with compile (twice the compile time)
        self.unpadded_graphs = self.use_graphs and self.model.fused and not self.options.compile
        self.graphs: dict[tuple[int, int, bool], CapturedBatch] = {}
        self.graph_pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        seq_limit = self.spec.max_length
        self.sequence_buckets = tuple(b for b in self.SEQUENCE_BUCKETS if b < seq_limit) + (seq_limit,)
        if self.use_graphs:
            self.max_batch_size = self.BATCH_BUCKETS[-1]

    def _build_model(self) -> CudaModel:
        """float8 where it can run (else float16, logged and described), other dtypes as asked."""
        if self.options.dtype == "float8":
            from handler.kernels.fp8_bert import Fp8Unavailable
            from handler.kernels.fused_bert import UnsupportedModel

            try:
                return build_fp8_model(self.model_dir, self.device, self.tokenizer_size)
            except (Fp8Unavailable, UnsupportedModel) as reason:
                logger.warning("cuda_dtype float8 not used (%s); running float16", reason)
                model = build_cuda_model(self.model_dir, self.device, torch.float16, self.options.fused, self.tokenizer_size)
                return replace(model, precision=f"float16 (float8 asked: {reason})")
        model = build_cuda_model(self.model_dir, self.device, TORCH_DTYPES[self.options.dtype], self.options.fused, self.tokenizer_size)
        return replace(model, precision=self.options.dtype)

    def _warm_up_impl(self) -> None:
        """Run every shape bucket once (capturing its graph) so that no request pays for it."""
        batches = self.BATCH_BUCKETS if self.use_graphs else (1, 8)
        lengths = self.sequence_buckets if self.use_graphs else (self.sequence_buckets[-1],)
        for batch in batches:
            for length in lengths:
                ids = np.full((batch, length), min(100, (self.tokenizer_size or 101) - 1), dtype=np.int64)  # a valid id for any vocabulary
                padded = np.ones_like(ids)
                padded[:, -1] = 0
                for mask in (padded, np.ones_like(ids)) if self.unpadded_graphs else (padded,):
                    self.infer({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
        torch.cuda.synchronize(self.device)

    def _infer_impl(self, inputs):
        if self.packs(inputs["attention_mask"]):
            return self._infer_packed(inputs)
        if self.use_graphs:
            return self._infer_graphed(inputs).numpy()
        with torch.inference_mode():
            on_device = {name: tensor.to(self.device, non_blocking=True) for name, tensor in as_tensors(inputs, CapturedBatch.INPUT_ROWS).items()}
            return self.forward_logits(on_device["input_ids"], on_device["token_type_ids"], on_device["attention_mask"]).float().cpu().numpy()

    def packs(self, attention_mask: np.ndarray) -> bool:
        """True when this batch runs packed: `packing` on, the fused module, a large batch with much padding."""
        if not (self.options.packing and self.model.fused) or attention_mask.shape[0] < self.PACKING_MIN_BATCH:
            return False
        return (attention_mask != 0).mean() <= self.PACKING_MAX_REAL_SHARE

    def _infer_packed(self, inputs):
        from handler.kernels.fused_bert import Packing

        with torch.inference_mode():
            on_device = {name: tensor.to(self.device, non_blocking=True) for name, tensor in as_tensors(inputs, CapturedBatch.INPUT_ROWS).items()}
            packing = Packing.from_mask(inputs["attention_mask"], self.device)
            logits = self.model.module(on_device["input_ids"], on_device["token_type_ids"], on_device["attention_mask"], packing)
            return logits.float().cpu().numpy()

    def _infer_graphed(self, inputs):
        batch, length = inputs["input_ids"].shape
        key = graph_key(inputs["attention_mask"], self.BATCH_BUCKETS, self.sequence_buckets, self.unpadded_graphs)
        captured = self.graphs.get(key)
        if captured is None:
            captured = self.graphs[key] = CapturedBatch(self.forward_logits, key[:2], self.device, self.graph_pool, masked=key[2])
        return captured.run(inputs, batch, length)

    def describe(self):
        return {
            "backend": self.name,
            "gpu_id": self.gpu_id,
            "device": torch.cuda.get_device_name(self.device),
            "dtype": self.model.precision,
            "model": "fused BERT" if self.model.fused else "Hugging Face",
            "cuda_graphs": f"{len(self.graphs)} captured" if self.use_graphs else "off",
        }
