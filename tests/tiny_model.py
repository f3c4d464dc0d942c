"""Random-weight BERT classifiers for tests and benchmarks: real architecture and tokenizer, seeded weights."""

from __future__ import annotations

import shutil
from pathlib import Path

LABELS = ["negative", "neutral", "positive"]


def random_bert_checkpoint(out_dir: Path, tokenizer_dir: Path, labels: list[str] = LABELS, seed: int = 0, classifier_scale: float = 1.0, **config) -> Path:
    """Save a seeded random BertForSequenceClassification (BertConfig defaults overridden by `config`)
    and the tokenizer from `tokenizer_dir` to out_dir. `classifier_scale` widens the logits so that
    probabilities are not all near-ties."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    bert_config = BertConfig(
        vocab_size=tokenizer.vocab_size, id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)}, **config
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(bert_config).eval()
    if classifier_scale != 1.0:
        with torch.no_grad():
            model.classifier.weight.mul_(classifier_scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def make_tiny_checkpoint(out_dir: Path, labels: list[str] = LABELS, seed: int = 0) -> Path:
    """Save a 2-layer, hidden-32 BertForSequenceClassification with MiniLM's tokenizer to out_dir."""
    from export.default_data import default_backbone_dir

    return random_bert_checkpoint(
        out_dir, default_backbone_dir(), labels, seed,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
        initializer_range=0.5,  # large random weights, so different texts get different labels
    )  # fmt: skip


def model_dir_like_mar(checkpoint: Path, export_dir: Path, out_dir: Path) -> Path:
    """Lay files out as TorchServe unpacks the .mar: model/ + serving_spec.json (+ model.onnx)."""
    from handler.backends import CHECKPOINT_SUBDIR

    shutil.copytree(checkpoint, out_dir / CHECKPOINT_SUBDIR, dirs_exist_ok=True)
    for name in ("serving_spec.json", "model.onnx", "model.int8.onnx"):
        if (export_dir / name).is_file():
            shutil.copy2(export_dir / name, out_dir / name)
    return out_dir


def torch_cpu_classifier(model_dir: Path, num_threads: int = 1):
    """The handler's TextClassifier on the eager fp32 torch CPU backend (the numerical reference)."""
    from handler.backends import TorchCpuBackend
    from handler.classifier import TextClassifier, load_tokenizer
    from handler.spec import ModelSpec

    spec = ModelSpec.load(model_dir)
    backend = TorchCpuBackend(model_dir, spec, {"num_threads": num_threads}).load()
    return TextClassifier(load_tokenizer(model_dir), backend, spec)


def in_process_classifier(checkpoint: Path, export_dir: Path, work_dir: Path):
    """`torch_cpu_classifier` over the checkpoint laid out as the worker sees it."""
    return torch_cpu_classifier(model_dir_like_mar(checkpoint, export_dir, work_dir))


def torch_cuda_model(model_dir: Path, device, dtype, **options):
    """The torch_cuda backend's model-building step alone (no warm-up, no graphs): returns the backend
    (for its `fused` flag) and its forward function (input_ids, token_type_ids, attention_mask) -> logits."""
    from handler.backends import TorchCudaBackend
    from handler.spec import ModelSpec

    backend = TorchCudaBackend(model_dir, ModelSpec.load(model_dir), options)
    backend.device = device
    _, forward = backend._build_model(dtype)
    return backend, forward
