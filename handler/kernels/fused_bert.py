"""A BERT sequence classifier for inference with fewer, larger kernels than the Hugging Face module.

Built from the weights of a `BertForSequenceClassification` (same maths; tests/handler/kernels/test_fused_bert.py
checks it against the Hugging Face module). Activations stay 2-D, [tokens, hidden], so every
projection is one GEMM, and one encoder layer runs seven kernels:

    QKV GEMM (+bias) -> attention (SDPA) -> output GEMM (+residual) -> LayerNorm
    -> up GEMM (+bias, +GELU, both in the cuBLASLt epilogue) -> down GEMM (+residual) -> LayerNorm

where the Hugging Face module runs about thirteen (three Q/K/V GEMMs, a separate GELU, separate
bias and residual adds) and moves the 4x-wide intermediate through memory two more times.

How the bias and residual adds disappear: the residual stream entering a projection that adds onto
it already carries that projection's bias. The LayerNorm producing the stream adds the bias to its
shift (beta); the GEMMs that *read* the stream subtract it again through their own bias
(b' = b - W @ bias, folded once at load, in float32); the projection then accumulates onto the
stream in place (`addmm_`, beta = 1, done by cuBLAS in the GEMM epilogue).

LayerNorms, and the embeddings' lookup + sum + LayerNorm, run as Triton kernels on CUDA
(handler/kernels/triton_kernels.py), with PyTorch's kernels where Triton is missing.

GELU: in fp16/bf16 it runs in the GEMM epilogue, which computes the tanh approximation; BERT
checkpoints ("gelu") use the erf form. They differ by less than 5e-4 per activation, below the
rounding of the values around them (bench/gpu_inprocess.py reports agreement with the float32 CPU
reference). In float32 the module runs the checkpoint's own GELU as a separate kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from handler.kernels.triton_kernels import embedding_layer_norm, layer_norm

#: hidden_act -> the `approximate` argument of F.gelu that computes it
SUPPORTED_ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


@dataclass(frozen=True)
class Packing:
    """The real tokens of a right-padded [batch, seq] batch: with it, every projection, LayerNorm and the
    residual stream run on those rows only, and attention scatters them back to the padded layout."""

    #: flat indices (row x seq + position) of the real tokens, in order
    tokens: torch.Tensor
    #: each sequence's first token (its [CLS]) among the packed rows
    first_tokens: torch.Tensor

    @classmethod
    def from_mask(cls, attention_mask: np.ndarray, device: torch.device) -> "Packing":
        """The packing of a right-padded batch whose mask (nonzero: real token) is known on the host."""
        real = attention_mask != 0
        lengths = real.sum(axis=1)
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return cls(torch.from_numpy(np.flatnonzero(real.reshape(-1))).to(device), torch.from_numpy(first).to(device))


class UnsupportedModel(ValueError):
    """The checkpoint is not a plain BERT classifier this module reproduces; use the Hugging Face module."""


class FusedBertClassifier(torch.nn.Module):
    """Inference-only BERT classifier; `from_hf(model)` builds it, `forward` returns logits."""

    #: LayerNorms (and the embeddings) by the Triton kernels on CUDA (handler/kernels/triton_kernels.py); False: PyTorch's
    triton_kernels = True

    def __init__(self, state: dict[str, torch.Tensor], num_layers: int, num_heads: int, layer_norm_eps: float, gelu_approximate: str = "none"):
        super().__init__()
        self.gelu_approximate = gelu_approximate
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.layer_norm_eps = layer_norm_eps
        for name, tensor in state.items():
            self.register_buffer(name, tensor.contiguous(), persistent=False)
        #: called as observer(key, tensor) with each projection's input ("layer3_up"), e.g. to calibrate FP8 scales
        self.observer = None

    @classmethod
    def from_hf(cls, model, tokenizer_size: int | None = None) -> "FusedBertClassifier":
        """Fold the weights of a Hugging Face BertForSequenceClassification (any device/dtype) into a new
        float32 CPU module; move it with `.to(device, dtype)`. Raises `UnsupportedModel` for variants it
        does not reproduce, and when the tokenizer has more tokens (`tokenizer_size`) than the embedding
        has rows (the fused embedding kernel does not bounds-check ids)."""
        config = model.config
        if config.model_type != "bert":
            raise UnsupportedModel(f"model_type {config.model_type!r} is not 'bert'")
        if config.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise UnsupportedModel(f"hidden_act {config.hidden_act!r} is not one of {sorted(SUPPORTED_ACTIVATIONS)}")
        if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
            raise UnsupportedModel(f"position_embedding_type {config.position_embedding_type!r} is not 'absolute'")
        if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
            raise UnsupportedModel("decoder / cross-attention configurations are not supported")
        if tokenizer_size is not None and tokenizer_size > config.vocab_size:
            raise UnsupportedModel(f"the tokenizer has {tokenizer_size} tokens but the embedding only {config.vocab_size} rows")
        hf = {name: tensor.detach().float().cpu() for name, tensor in model.state_dict().items()}
        layers = config.num_hidden_layers

        def layer_key(index: int, name: str) -> torch.Tensor:
            return hf[f"bert.encoder.layer.{index}.{name}"]

        state = {
            "word_embeddings": hf["bert.embeddings.word_embeddings.weight"],
            "position_embeddings": hf["bert.embeddings.position_embeddings.weight"],
            "token_type_embeddings": hf["bert.embeddings.token_type_embeddings.weight"],
            "embeddings_ln_weight": hf["bert.embeddings.LayerNorm.weight"],
            # the stream entering layer 0 carries layer 0's attention-output bias
            "embeddings_ln_bias": hf["bert.embeddings.LayerNorm.bias"] + layer_key(0, "attention.output.dense.bias"),
            "pooler_weight": hf["bert.pooler.dense.weight"],
            "pooler_bias": hf["bert.pooler.dense.bias"],
            "classifier_weight": hf["classifier.weight"],
            "classifier_bias": hf["classifier.bias"],
        }
        for index in range(layers):
            carried = layer_key(index, "attention.output.dense.bias")  # bias the incoming stream carries
            qkv_weight = torch.cat([layer_key(index, f"attention.self.{part}.weight") for part in ("query", "key", "value")])
            qkv_bias = torch.cat([layer_key(index, f"attention.self.{part}.bias") for part in ("query", "key", "value")])
            down_bias = layer_key(index, "output.dense.bias")
            up_weight = layer_key(index, "intermediate.dense.weight")
            next_carried = layer_key(index + 1, "attention.output.dense.bias") if index + 1 < layers else torch.zeros_like(carried)
            state |= {
                f"layer{index}_qkv_weight": qkv_weight,
                f"layer{index}_qkv_bias": qkv_bias - qkv_weight @ carried,
                f"layer{index}_out_weight": layer_key(index, "attention.output.dense.weight"),
                f"layer{index}_ln1_weight": layer_key(index, "attention.output.LayerNorm.weight"),
                f"layer{index}_ln1_bias": layer_key(index, "attention.output.LayerNorm.bias") + down_bias,
                f"layer{index}_up_weight": up_weight,
                f"layer{index}_up_bias": layer_key(index, "intermediate.dense.bias") - up_weight @ down_bias,
                f"layer{index}_down_weight": layer_key(index, "output.dense.weight"),
                f"layer{index}_ln2_weight": layer_key(index, "output.LayerNorm.weight"),
                f"layer{index}_ln2_bias": layer_key(index, "output.LayerNorm.bias") + next_carried,
            }
        return cls(state, layers, config.num_attention_heads, config.layer_norm_eps, SUPPORTED_ACTIVATIONS[config.hidden_act])

    @property
    def dtype(self) -> torch.dtype:
        return self.word_embeddings.dtype

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, packing: Packing | None = None
    ) -> torch.Tensor:
        """Logits [batch, labels] in the module's dtype. `attention_mask` [batch, seq]: nonzero = real
        token; None means no padding at all (SDPA may then use flash attention). With `packing` (and the
        mask) the padding rows are dropped after the embeddings."""
        batch, length = input_ids.shape
        hidden = self.word_embeddings.shape[1]
        if length > self.position_embeddings.shape[0]:
            raise ValueError(f"sequence of {length} tokens is longer than the model's {self.position_embeddings.shape[0]} positions")
        stream = embedding_layer_norm(
            input_ids, token_type_ids, self.word_embeddings, self.position_embeddings, self.token_type_embeddings,
            self.embeddings_ln_weight, self.embeddings_ln_bias, self.layer_norm_eps, use_triton=self.triton_kernels,
        )  # fmt: skip
        if packing is not None:
            stream = stream.index_select(0, packing.tokens)
        bias_mask = None
        if attention_mask is not None:
            bias_mask = torch.zeros(attention_mask.shape, dtype=stream.dtype, device=stream.device)
            bias_mask.masked_fill_(attention_mask == 0, torch.finfo(stream.dtype).min)
            bias_mask = bias_mask[:, None, None, :]
        stream = self._encoder(stream, bias_mask, batch, length, packing)
        first_tokens = stream.index_select(0, packing.first_tokens) if packing is not None else stream.view(batch, length, hidden)[:, 0]
        pooled = torch.tanh(torch.addmm(self.pooler_bias, first_tokens, self.pooler_weight.t()))
        return torch.addmm(self.classifier_bias, pooled, self.classifier_weight.t())

    def _encoder(self, stream: torch.Tensor, bias_mask: torch.Tensor | None, batch: int, length: int, packing: Packing | None) -> torch.Tensor:
        for index in range(self.num_layers):
            stream = self._layer(index, stream, bias_mask, batch, length, packing)
        return stream

    def _observe(self, key: str, values: torch.Tensor) -> None:
        if self.observer is not None:
            self.observer(key, values)

    def _attention(self, qkv: torch.Tensor, bias_mask: torch.Tensor | None, batch: int, length: int, packing: Packing | None = None) -> torch.Tensor:
        """Multi-head attention over the fused QKV projection [tokens, 3 x hidden] -> context [tokens, hidden]
        (packed tokens are scattered to the padded layout for attention and gathered back)."""
        if packing is not None:
            qkv = qkv.new_zeros((batch * length, qkv.shape[1])).index_copy_(0, packing.tokens, qkv)
        hidden = qkv.shape[1] // 3
        head_dim = hidden // self.num_heads
        query, key, value = qkv.view(batch, length, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias_mask)
        context = context.transpose(1, 2).reshape(batch * length, hidden)
        return context.index_select(0, packing.tokens) if packing is not None else context

    def _layer(self, index: int, stream: torch.Tensor, bias_mask: torch.Tensor | None, batch: int, length: int, packing: Packing | None = None) -> torch.Tensor:
        weights = lambda name: getattr(self, f"layer{index}_{name}")  # noqa: E731
        self._observe(f"layer{index}_qkv", stream)
        qkv = torch.addmm(weights("qkv_bias"), stream, weights("qkv_weight").t())
        context = self._attention(qkv, bias_mask, batch, length, packing)
        self._observe(f"layer{index}_out", context)
        stream.addmm_(context, weights("out_weight").t())
        stream = self._layer_norm(stream, f"layer{index}_ln1")
        self._observe(f"layer{index}_up", stream)
        if stream.dtype == torch.float32:  # the checkpoint's exact GELU, as a separate kernel
            intermediate = F.gelu(torch.addmm(weights("up_bias"), stream, weights("up_weight").t()), approximate=self.gelu_approximate)
        else:  # bias + GELU (tanh form) in the cuBLASLt epilogue
            intermediate = torch._addmm_activation(weights("up_bias"), stream, weights("up_weight").t(), use_gelu=True)
        self._observe(f"layer{index}_down", intermediate)
        stream.addmm_(intermediate, weights("down_weight").t())
        return self._layer_norm(stream, f"layer{index}_ln2")

    def _layer_norm(self, values: torch.Tensor, prefix: str) -> torch.Tensor:
        weight, bias = getattr(self, f"{prefix}_weight"), getattr(self, f"{prefix}_bias")
        return layer_norm(values, weight, bias, self.layer_norm_eps, use_triton=self.triton_kernels)
