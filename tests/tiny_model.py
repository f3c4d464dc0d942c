"""A tiny BERT classifier for tests: real architecture and tokenizer, random (seeded) weights."""

from __future__ import annotations

import shutil
from pathlib import Path

LABELS = ["negative", "neutral", "positive"]


def make_tiny_checkpoint(out_dir: Path, labels: list[str] = LABELS, seed: int = 0) -> Path:
    """Save a 2-layer, hidden-32 BertForSequenceClassification with MiniLM's tokenizer to out_dir."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from export.default_data import default_backbone_dir

    tokenizer = AutoTokenizer.from_pretrained(default_backbone_dir(), local_files_only=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.5,  # large random weights, so different texts get different labels
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def model_dir_like_mar(checkpoint: Path, export_dir: Path, out_dir: Path) -> Path:
    """Lay files out as TorchServe unpacks the .mar: model/ + serving_spec.json (+ model.onnx)."""
    from handler.backends import CHECKPOINT_SUBDIR

    shutil.copytree(checkpoint, out_dir / CHECKPOINT_SUBDIR, dirs_exist_ok=True)
    for name in ("serving_spec.json", "model.onnx", "model.int8.onnx"):
        if (export_dir / name).is_file():
            shutil.copy2(export_dir / name, out_dir / name)
    return out_dir


def in_process_classifier(checkpoint: Path, export_dir: Path, work_dir: Path):
    """The handler's TextClassifier on the torch CPU backend, reading files as the worker does."""
    from handler.backends import TorchCpuBackend
    from handler.classifier import TextClassifier, load_tokenizer
    from handler.spec import ModelSpec

    model_dir = model_dir_like_mar(checkpoint, export_dir, work_dir)
    spec = ModelSpec.load(model_dir)
    backend = TorchCpuBackend(model_dir, spec, {"num_threads": 1}).load()
    return TextClassifier(load_tokenizer(model_dir), backend, spec)
