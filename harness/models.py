"""Models for tests and benchmarks: seeded random-weight BERT classifiers (real architecture and tokenizer),
folders laid out as a worker sees the .mar, and the CPU reference classifier."""

from __future__ import annotations

import shutil
from pathlib import Path

from handler import layout
from training.data import default_backbone_dir

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
    return random_bert_checkpoint(
        out_dir, default_backbone_dir(), labels, seed,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
        initializer_range=0.5,  # large random weights, so different texts get different labels
    )  # fmt: skip


#: tiny configurations of each served family (random weights; the tokenizer decides the vocabulary size)
TINY_FAMILY_CONFIGS = {
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128),
    # real RoBERTa / XLM-R checkpoints have one token type; positions start after pad_token_id (64 usable here)
    "roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, type_vocab_size=1, max_position_embeddings=65),
    "xlm-roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, type_vocab_size=1, max_position_embeddings=65),
    "distilbert": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128),
    "electra": dict(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128),
    "deberta-v2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                       relative_attention=True, position_buckets=32, pos_att_type=["p2c", "c2p"]),
}  # fmt: skip


def letters_tokenizer():
    """A WordPiece tokenizer over single letters and digits (no files needed; for GPU machines without MiniLM's)."""
    from transformers import BertTokenizerFast

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789.,!?"]
    tokens += [f"##{token}" for token in "abcdefghijklmnopqrstuvwxyz0123456789"]
    return BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)})


def byte_level_tokenizer():
    """A small byte-level BPE tokenizer framed as RoBERTa's is (``<s> A </s></s> B </s>``, one token type),
    trained here on a few sentences (no files needed)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    sentences = ["the quick brown fox jumps over the lazy dog", "great value, would buy again", "broken on arrival, refund please"]
    tokenizer.train_from_iterator(sentences * 10, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return RobertaTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
                                pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")  # fmt: skip


def random_family_checkpoint(
    family: str, out_dir: Path, tokenizer_dir: Path | None = None, labels: list[str] = LABELS, seed: int = 0, tokenizer=None, **config_overrides
) -> Path:
    """Save a seeded random sequence classifier of `family` (a model_type of TINY_FAMILY_CONFIGS, its sizes
    overridden by `config_overrides`, e.g. problem_type="regression" or text_pair=True) with the tokenizer
    `tokenizer` or the one from `tokenizer_dir` (neither: `letters_tokenizer`), its input names cut to what
    the family takes, to out_dir."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from handler.spec import uses_token_types

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True) if tokenizer_dir else letters_tokenizer()
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    config = AutoConfig.for_model(
        family, vocab_size=len(tokenizer), id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
        initializer_range=0.5, **ids, **(TINY_FAMILY_CONFIGS[family] | config_overrides),
    )  # fmt: skip
    if not uses_token_types(config.to_dict()):
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


#: the small BERT of `random_hf_model`
SMALL = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128, num_labels=3, vocab_size=500)


def random_hf_model(**overrides):
    """A small random BertForSequenceClassification (`SMALL` overridden by `overrides`) whose biases and
    LayerNorm shifts are non-zero (the fused module folds them)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**(SMALL | overrides))).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.3)
    return model


def padded_inputs() -> dict:
    """Inputs for `random_hf_model`: 4 rows of 12 tokens, two of them padded, two token types."""
    import torch

    torch.manual_seed(1)
    input_ids = torch.randint(5, 500, (4, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    attention_mask[3, 2:] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 6:] = 1
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def model_dir_like_mar(checkpoint: Path, export_dir: Path, out_dir: Path) -> Path:
    """Lay files out as TorchServe unpacks the .mar: the checkpoint folder, the spec and any ONNX files."""
    shutil.copytree(checkpoint, out_dir / layout.CHECKPOINT_DIR, dirs_exist_ok=True)
    for name in (layout.SPEC_FILE, layout.ONNX_FILE, layout.INT8_ONNX_FILE):
        if (export_dir / name).is_file():
            shutil.copy2(export_dir / name, out_dir / name)
    return out_dir


def torch_cpu_classifier(model_dir: Path, num_threads: int = 1):
    """The handler's TextClassifier on the eager fp32 torch CPU backend with the whole batch in one pass
    (the numerical reference)."""
    from handler.backends.torch_cpu import TorchCpuBackend
    from handler.classifier import TextClassifier
    from handler.settings import TorchCpuOptions
    from handler.spec import ModelSpec
    from handler.tokenizer import load_tokenizer

    spec = ModelSpec.load(model_dir)
    backend = TorchCpuBackend(model_dir, spec, TorchCpuOptions(num_threads=num_threads, sub_batch=None)).load()
    return TextClassifier(load_tokenizer(model_dir), backend, spec)


def in_process_classifier(checkpoint: Path, export_dir: Path, work_dir: Path):
    """`torch_cpu_classifier` over the checkpoint laid out as the worker sees it."""
    return torch_cpu_classifier(model_dir_like_mar(checkpoint, export_dir, work_dir))
