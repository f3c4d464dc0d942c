"""The torch_cuda backend's model building: the fused module where it reproduces the checkpoint, the
Hugging Face module otherwise (run on the CPU in float32; the GPU path is measured by bench/gpu_*.py)."""

from __future__ import annotations

import pytest
import torch

from handler import layout
from handler.backends.torch_cuda import build_cuda_model
from handler.spec import ModelSpec
from harness.models import padded_inputs, random_hf_model


def torch_cuda_model(model_dir, fused: bool):
    """The torch_cuda backend's model-building step, run on the CPU in float32 (no GPU needed for the glue)."""
    return build_cuda_model(model_dir, torch.device("cpu"), torch.float32, fused=fused, tokenizer_size=30522)


def model_dir_with(model, tokenizer_from, directory):
    """`model` saved as the worker sees it (model/ with the tokenizer of `tokenizer_from`, serving_spec.json)."""
    from transformers import AutoTokenizer

    model.save_pretrained(directory / layout.CHECKPOINT_DIR)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(directory / layout.CHECKPOINT_DIR)
    ModelSpec(id2label=dict(enumerate("abc")), max_length=16).save(directory)
    return directory


def test_torch_cuda_backend_builds_the_fused_model_with_the_same_logits(tiny_checkpoint, tmp_path):
    model = random_hf_model(vocab_size=30522)  # the tokenizer's size; non-zero biases exercise the folding
    model_dir = model_dir_with(model, tiny_checkpoint, tmp_path)
    inputs = padded_inputs()
    fused_model = torch_cuda_model(model_dir, fused=True)
    hf_model = torch_cuda_model(model_dir, fused=False)
    assert (fused_model.fused, hf_model.fused) == (True, False)
    fused_forward, hf_forward = fused_model.forward, hf_model.forward
    with torch.inference_mode():
        arguments = (inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
        expected = model(**inputs).logits
        torch.testing.assert_close(fused_forward(*arguments), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(hf_forward(*arguments), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("overrides", [{"hidden_act": "relu", "vocab_size": 30522}, {"vocab_size": 500}], ids=["relu", "tokenizer_larger_than_vocabulary"])
def test_torch_cuda_backend_falls_back_to_hugging_face_for_other_models(tiny_checkpoint, tmp_path, overrides):
    model = random_hf_model(**overrides)
    built = torch_cuda_model(model_dir_with(model, tiny_checkpoint, tmp_path), fused=True)
    assert built.fused is False
    forward = built.forward
    inputs = padded_inputs()
    with torch.inference_mode():
        expected = model(**inputs).logits
        torch.testing.assert_close(forward(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"]), expected)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def mixed_length_inputs(lengths: list[int], low: int = 1000, high: int = 30000, seed: int = 3) -> dict[str, torch.Tensor]:
    """Random ids in [low, high), right-padded to the longest of `lengths`, one token type."""
    ids = torch.randint(low, high, (len(lengths), max(lengths)), generator=torch.Generator().manual_seed(seed))
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def assert_close_and_batch_invariant(backend, model, inputs: dict, lengths: list[int], input_names, tolerance: float) -> None:
    """The backend's probabilities for the padded batch are within `tolerance` of the float32 CPU model's, and
    each text's alone (its own graph) within 2e-3 of its row in the batch."""
    with torch.inference_mode():
        reference = torch.softmax(model(**{name: inputs[name] for name in input_names}).logits, -1)
    batched = torch.softmax(torch.from_numpy(backend.infer({name: tensor.numpy() for name, tensor in inputs.items()})), -1)
    assert (batched - reference).abs().max() < tolerance
    for row, length in enumerate(lengths):
        alone = {name: tensor[row : row + 1, :length].numpy() for name, tensor in inputs.items()}
        assert (torch.softmax(torch.from_numpy(backend.infer(alone)), -1)[0] - batched[row]).abs().max() <= 2e-3, f"row {row} (length {length})"


@pytest.mark.gpu
@needs_cuda
def test_backend_with_server_defaults_matches_cpu_and_answers_a_text_the_same_in_any_batch(tmp_path):
    """fp16 + fused + CUDA graphs (the defaults): close to float32 on the CPU, and a text's probabilities
    alone (its own unpadded or masked graph) and inside a padded batch agree within 2e-3."""
    from handler.backends.torch_cuda import TorchCudaBackend

    model = random_hf_model(vocab_size=30522)
    model.save_pretrained(tmp_path / layout.CHECKPOINT_DIR)
    spec = ModelSpec(id2label=dict(enumerate("abc")), max_length=64)
    spec.save(tmp_path)
    backend = TorchCudaBackend(tmp_path, spec, gpu_id=0, tokenizer_size=30522).load()
    assert backend.model.fused and backend.use_graphs and backend.unpadded_graphs
    lengths = [5, 16, 23, 32, 40, 64, 9, 1]
    assert_close_and_batch_invariant(backend, model, mixed_length_inputs(lengths), lengths, spec.input_names, tolerance=1e-2)
    backend.close()


@pytest.mark.gpu
@needs_cuda
def test_float8_backend_runs_fp8_where_it_can_and_answers_a_text_the_same_in_any_batch(tmp_path):
    """cuda_dtype float8: FP8 projections on a GPU with FP8 tensor cores and fp8_scales.json (close to
    float32 on the CPU, batch-invariant within 2e-3); without the scales file it runs float16 and says why."""
    from handler.backends.torch_cuda import TorchCudaBackend
    from handler.kernels.fp8_bert import calibrate, fp8_capable
    from handler.kernels.fused_bert import FusedBertClassifier
    from handler.settings import TorchCudaOptions

    model = random_hf_model(vocab_size=30522)
    model.save_pretrained(tmp_path / layout.CHECKPOINT_DIR)
    spec = ModelSpec(id2label=dict(enumerate("abc")), max_length=64)
    spec.save(tmp_path)
    options = TorchCudaOptions(dtype="float8")
    without_scales = TorchCudaBackend(tmp_path, spec, gpu_id=0, tokenizer_size=30522, options=options).load()
    assert without_scales.describe()["dtype"].startswith("float16 (float8 asked:")
    without_scales.close()
    if not fp8_capable(torch.device("cuda", 0)):
        pytest.skip("this GPU has no FP8 tensor cores")

    lengths = [5, 16, 23, 32, 40, 64, 9, 1]
    inputs = mixed_length_inputs(lengths)
    fused = FusedBertClassifier.from_hf(model)
    calibrate(fused, [(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])], "test", 0).save(tmp_path / layout.FP8_SCALES_FILE)
    backend = TorchCudaBackend(tmp_path, spec, gpu_id=0, tokenizer_size=30522, options=options).load()
    assert backend.describe()["dtype"] == "float8 (e4m3 projections)"
    assert_close_and_batch_invariant(backend, model, inputs, lengths, spec.input_names, tolerance=5e-2)
    backend.close()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("family", ["roberta", "xlm-roberta", "distilbert", "electra", "deberta-v2"])
def test_other_families_run_the_hugging_face_module_under_cuda_graphs(family, tmp_path):
    """Non-BERT encoders: the Hugging Face module in fp16 with CUDA graphs (DeBERTa-v2 eagerly: its forward
    copies host tensors, which capture refuses), close to float32 on the CPU, a text alone and inside a
    padded batch within 2e-3."""
    from handler.backends.torch_cuda import TorchCudaBackend
    from harness.models import letters_tokenizer, random_family_checkpoint

    random_family_checkpoint(family, tmp_path / layout.CHECKPOINT_DIR)
    vocabulary = len(letters_tokenizer())
    spec = ModelSpec.from_checkpoint(tmp_path / layout.CHECKPOINT_DIR, max_length=64)
    spec.save(tmp_path)
    backend = TorchCudaBackend(tmp_path, spec, gpu_id=0, tokenizer_size=vocabulary).load()
    assert not backend.model.fused and backend.use_graphs == (family != "deberta-v2")
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / layout.CHECKPOINT_DIR).eval()
    lengths = [5, 16, 23, 40, 9, 1]
    assert_close_and_batch_invariant(backend, model, mixed_length_inputs(lengths, low=5, high=vocabulary), lengths, spec.input_names, tolerance=1e-2)
    backend.close()


@pytest.mark.gpu
@needs_cuda
def test_packing_runs_large_padded_batches_packed_with_the_answers_of_the_graphs(tmp_path):
    """cuda_packing: a batch of 40 mostly short texts runs packed (GEMMs on real tokens only); every text's
    probabilities equal those of the same text alone (its CUDA graph) within 2e-3."""
    from handler.backends.torch_cuda import TorchCudaBackend
    from handler.settings import TorchCudaOptions

    model = random_hf_model(vocab_size=30522)
    model.save_pretrained(tmp_path / layout.CHECKPOINT_DIR)
    spec = ModelSpec(id2label=dict(enumerate("abc")), max_length=64)
    spec.save(tmp_path)
    backend = TorchCudaBackend(tmp_path, spec, gpu_id=0, tokenizer_size=30522, options=TorchCudaOptions(packing=True)).load()
    lengths = torch.randint(2, 24, (40,), generator=torch.Generator().manual_seed(5)).tolist() + [64]
    inputs = mixed_length_inputs(lengths, seed=5)
    assert backend.packs(inputs["attention_mask"].numpy()) and not backend.packs(inputs["attention_mask"][:4].numpy())
    assert_close_and_batch_invariant(backend, model, inputs, lengths, spec.input_names, tolerance=1e-2)
    backend.close()


def random_batches(count: int, seed: int = 11) -> list[dict]:
    """`count` padded batches of 1..48 rows and 1..64 tokens: every CUDA-graph bucket gets several callers."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for index in range(count):
        rows = int(torch.randint(1, 49, (1,), generator=generator))
        lengths = torch.randint(1, 65, (rows,), generator=generator).tolist()
        batches.append({name: tensor.numpy() for name, tensor in mixed_length_inputs(lengths, seed=seed + index).items()})
    return batches


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", ["float16", "float8"])
def test_threads_through_one_cuda_graph_backend_get_the_sequential_answers(tmp_path, dtype):
    """The registry's contract for torch_cuda (one set of static graph buffers: calls serialised by
    Backend.infer): 8 threads x 120 batches give exactly what the same batches give one after the other.
    Before the lock, 2 threads gave 4 of 120 batches wrong (|dp| up to 0.94) on an H200."""
    from concurrent.futures import ThreadPoolExecutor

    from handler.backends.torch_cuda import TorchCudaBackend
    from handler.kernels.fp8_bert import calibrate, fp8_capable
    from handler.kernels.fused_bert import FusedBertClassifier
    from handler.settings import TorchCudaOptions

    model = random_hf_model(vocab_size=30522)
    model.save_pretrained(tmp_path / layout.CHECKPOINT_DIR)
    spec = ModelSpec(id2label=dict(enumerate("abc")), max_length=64)
    spec.save(tmp_path)
    batches = random_batches(120)
    if dtype == "float8":
        if not fp8_capable(torch.device("cuda", 0)):
            pytest.skip("this GPU has no FP8 tensor cores")
        calibration = [tuple(torch.from_numpy(batches[0][name]) for name in ("input_ids", "token_type_ids", "attention_mask"))]
        calibrate(FusedBertClassifier.from_hf(model), calibration, "test", 0).save(tmp_path / layout.FP8_SCALES_FILE)
    backend = TorchCudaBackend(tmp_path, spec, gpu_id=0, tokenizer_size=30522, options=TorchCudaOptions(dtype=dtype)).load()
    assert backend.use_graphs and backend.entry.concurrent_infer is False
    assert dtype == "float16" or backend.describe()["dtype"] == "float8 (e4m3 projections)"
    probabilities = lambda batch: torch.softmax(torch.from_numpy(backend.infer(batch)), -1)  # noqa: E731
    sequential = [probabilities(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(probabilities, batches))
    wrong = [i for i, (a, b) in enumerate(zip(sequential, concurrent)) if (a - b).abs().max() > 2e-3]
    assert wrong == [], f"{len(wrong)} of {len(batches)} batches answered differently from 8 threads"
    backend.close()
