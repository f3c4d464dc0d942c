"""Sentence pairs and regression heads on the GPU: real 0/1 token types through the fused BERT module and
every CUDA-graph bucket, in float16 and float8, and a one-output (regression) head; each close to float32 on
the CPU, and a pair's answer alone within 2e-3 of its row in a padded batch. Backend-level, with random
weights (no tokenizer files needed on the GPU machine)."""

from __future__ import annotations

import pytest
import torch

from handler import layout
from handler.spec import ModelSpec
from harness.models import random_hf_model

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
LENGTHS = [5, 16, 23, 32, 40, 64, 9, 2]


def pair_inputs(lengths: list[int], seed: int = 3) -> dict[str, torch.Tensor]:
    """Random ids right-padded to the longest of `lengths`; each row's second segment (token type 1) starts
    somewhere in its second half, as BERT's [CLS] A [SEP] B [SEP] puts it."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (len(lengths), max(lengths)), generator=generator)
    positions = torch.arange(max(lengths))[None, :]
    mask = (positions < torch.tensor(lengths)[:, None]).long()
    starts = torch.tensor([max(1, length // 2) for length in lengths])[:, None]
    types = ((positions >= starts).long() * mask)
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types}


def saved_model(tmp_path, labels: int):
    model = random_hf_model(vocab_size=30522, num_labels=labels)
    with torch.no_grad():  # a fine-tuned pair model's segment B embedding matters; a random one's (std 0.02) hardly does
        model.bert.embeddings.token_type_embeddings.weight[1].normal_(0.0, 1.0, generator=torch.Generator().manual_seed(2))
    model.save_pretrained(tmp_path / layout.CHECKPOINT_DIR)
    if labels == 1:
        spec = ModelSpec(id2label={0: "score"}, max_length=64, problem_type="regression", text_pair=True)
    else:
        spec = ModelSpec(id2label=dict(enumerate("ab")), max_length=64, text_pair=True)
    spec.save(tmp_path)
    return model, spec


def cpu_outputs(model, inputs: dict) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs).logits


def check_rows_alone(backend, inputs: dict, batched: torch.Tensor, activation) -> None:
    for row, length in enumerate(LENGTHS):
        alone = {name: tensor[row : row + 1, :length].numpy() for name, tensor in inputs.items()}
        single = activation(torch.from_numpy(backend.infer(alone)))[0]
        assert (single - batched[row]).abs().max() <= 2e-3, f"row {row} (length {length})"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", ["float16", "float8"])
def test_pair_token_types_reach_the_fused_module_and_every_graph(tmp_path, dtype):
    from handler.backends.torch_cuda import TorchCudaBackend
    from handler.kernels.fp8_bert import calibrate, fp8_capable
    from handler.kernels.fused_bert import FusedBertClassifier
    from handler.settings import TorchCudaOptions

    model, spec = saved_model(tmp_path, labels=2)
    inputs = pair_inputs(LENGTHS)
    if dtype == "float8":
        if not fp8_capable(torch.device("cuda", 0)):
            pytest.skip("this GPU has no FP8 tensor cores")
        calibration = [(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])]
        calibrate(FusedBertClassifier.from_hf(model), calibration, "pairs", 0).save(tmp_path / layout.FP8_SCALES_FILE)
    backend = TorchCudaBackend(tmp_path, spec, gpu_id=0, tokenizer_size=30522, options=TorchCudaOptions(dtype=dtype)).load()
    assert backend.model.fused and backend.use_graphs
    assert dtype == "float16" or backend.describe()["dtype"] == "float8 (e4m3 projections)"
    reference = torch.softmax(cpu_outputs(model, inputs), -1)
    batched = torch.softmax(torch.from_numpy(backend.infer({name: tensor.numpy() for name, tensor in inputs.items()})), -1)
    assert (batched - reference).abs().max() < (1e-2 if dtype == "float16" else 5e-2)
    # the types reach the module: every token of type 1 ([CLS] included) answers differently from every token of
    # type 0 (on the CPU model: 0.015; a random model's answer hardly depends on segment B alone, 2.5e-4)
    answers = {}
    for kind, types in (("zeros", torch.zeros_like(inputs["token_type_ids"])), ("ones", inputs["attention_mask"])):
        feed = {**inputs, "token_type_ids": types}
        answers[kind] = torch.softmax(torch.from_numpy(backend.infer({name: tensor.numpy() for name, tensor in feed.items()})), -1)
    assert (answers["ones"] - answers["zeros"]).abs().max() > 5e-3
    check_rows_alone(backend, inputs, batched, lambda logits: torch.softmax(logits, -1))
    backend.close()


@pytest.mark.gpu
@needs_cuda
def test_a_regression_head_on_pairs_gives_the_cpu_score_in_float16(tmp_path):
    from handler.backends.torch_cuda import TorchCudaBackend

    model, spec = saved_model(tmp_path, labels=1)
    inputs = pair_inputs(LENGTHS, seed=4)
    backend = TorchCudaBackend(tmp_path, spec, gpu_id=0, tokenizer_size=30522).load()
    assert backend.model.fused and backend.use_graphs
    reference = cpu_outputs(model, inputs)
    batched = torch.from_numpy(backend.infer({name: tensor.numpy() for name, tensor in inputs.items()})).float()
    assert batched.shape == (len(LENGTHS), 1)
    assert (batched - reference).abs().max() < 2e-2 * max(1.0, reference.abs().max().item())
    check_rows_alone(backend, inputs, batched, lambda logits: logits.float())
    backend.close()
