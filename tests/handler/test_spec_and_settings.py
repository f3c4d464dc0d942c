"""The shared spec round-trips, and model-config.yaml's handler section is validated."""

import pytest

from handler.errors import ArchiveError
from handler.settings import HandlerSettings, OnnxRuntimeOptions, TorchCpuOptions, TorchCudaOptions
from handler.spec import ModelSpec


def test_spec_round_trip(tmp_path):
    spec = ModelSpec(id2label={0: "neg", 1: "pos"}, max_length=64)
    spec.save(tmp_path)
    loaded = ModelSpec.load(tmp_path)
    assert loaded == spec
    assert loaded.labels == ["neg", "pos"]
    assert loaded.dynamic_axes["input_ids"] == {0: "batch", 1: "sequence"}
    assert loaded.dynamic_axes["logits"] == {0: "batch"}


def test_spec_from_checkpoint_reads_labels_and_caps_length(tiny_checkpoint):
    spec = ModelSpec.from_checkpoint(tiny_checkpoint, max_length=512)
    assert spec.labels == ["negative", "neutral", "positive"]
    assert spec.max_length == 128  # the tiny model has 128 positions


@pytest.mark.parametrize("id2label", [{0: "only"}, {0: "a", 2: "b"}])
def test_spec_rejects_bad_label_maps(id2label):
    with pytest.raises(ValueError):
        ModelSpec(id2label=id2label)


def test_missing_spec_says_how_to_make_it(tmp_path):
    with pytest.raises(ArchiveError, match="export.onnx_export"):
        ModelSpec.load(tmp_path)


def test_settings_defaults_and_values():
    assert HandlerSettings.from_model_yaml({}) == HandlerSettings()
    settings = HandlerSettings.from_model_yaml({"handler": {"backend": "torch_cpu", "max_length": 64, "num_threads": "auto"}})
    assert (settings.backend, settings.max_length, settings.torch_cpu.num_threads) == ("torch_cpu", 64, None)
    flat = {"onnx_int8": False, "cpu_sub_batch": 4, "num_threads": 2, "cuda_graphs": False, "cuda_dtype": "bfloat16"}
    settings = HandlerSettings.from_model_yaml({"handler": flat})
    assert settings.onnxruntime == OnnxRuntimeOptions(num_threads=2, sub_batch=4, int8=False)
    assert settings.torch_cpu == TorchCpuOptions(num_threads=2, sub_batch=4)
    assert settings.torch_cuda == TorchCudaOptions(dtype="bfloat16", graphs=False)
    assert HandlerSettings.from_model_yaml({"handler": {"cpu_sub_batch": None}}).onnxruntime.sub_batch is None  # whole batch


def test_settings_round_trip_through_the_yaml_section():
    settings = HandlerSettings(backend="onnxruntime", max_length=96, onnxruntime=OnnxRuntimeOptions(int8=False, sub_batch=None), torch_cpu=TorchCpuOptions(sub_batch=None))
    assert HandlerSettings.from_model_yaml({"handler": settings.to_model_yaml()}) == settings
    assert HandlerSettings.from_model_yaml({"handler": HandlerSettings().to_model_yaml()}) == HandlerSettings()


def test_settings_reject_unknown_and_bad_values():
    with pytest.raises(ValueError, match="unknown handler settings"):
        HandlerSettings.from_model_yaml({"handler": {"max_len": 64}})
    with pytest.raises(ValueError, match="positive integer"):
        HandlerSettings.from_model_yaml({"handler": {"max_length": -1}})
    with pytest.raises(ValueError, match="positive integer"):
        HandlerSettings.from_model_yaml({"handler": {"num_threads": True}})
    with pytest.raises(ValueError, match="8..512"):
        HandlerSettings.from_model_yaml({"handler": {"max_length": 2}})
    with pytest.raises(ValueError, match="cuda_dtype"):
        HandlerSettings.from_model_yaml({"handler": {"cuda_dtype": "fp16"}})
    with pytest.raises(ValueError, match="needs cuda_graphs"):
        HandlerSettings.from_model_yaml({"handler": {"cuda_compile": True, "cuda_graphs": False}})
    with pytest.raises(ValueError, match="cuda_fused must be true or false"):
        HandlerSettings.from_model_yaml({"handler": {"cuda_fused": "yes"}})


def test_threads_split_cores_among_workers_unless_onnx_runtime_sleeps_when_idle(monkeypatch):
    monkeypatch.setattr("handler.settings.usable_cores", lambda: 8)
    assert HandlerSettings().for_workers(2).torch_cpu.num_threads == 4
    assert HandlerSettings().for_workers(16).torch_cpu.num_threads == 1
    assert HandlerSettings().for_workers(2).onnxruntime.num_threads == 8  # shipped: no spinning, every core per worker
    spinning = HandlerSettings.from_model_yaml({"handler": {"onnx_spinning": True}})
    assert spinning.onnxruntime.spinning and spinning.for_workers(2).onnxruntime.num_threads == 4
    configured = HandlerSettings.from_model_yaml({"handler": {"num_threads": 3}})
    assert configured.for_workers(2).onnxruntime.num_threads == configured.for_workers(2).torch_cpu.num_threads == 3


def test_a_spec_written_before_the_quantization_record_rename_still_loads(tmp_path):
    import json

    from handler.spec import ModelSpec

    record = {
        "method": "static int8 (QDQ)", "per_channel": True, "calibrate_method": "MinMax", "calibration_source": "train.csv",
        "calibration_texts": 300, "seed": 0, "quantized_ops": "weights", "evaluation_source": "test.csv", "evaluation_texts": 10,
        "accuracy_fp32": 0.8, "accuracy_int8": 0.79, "budget_points": 0.5,
    }  # fmt: skip
    (tmp_path / "serving_spec.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b"}, "input_names": ["input_ids"], "quantization": record}))
    assert ModelSpec.load(tmp_path).quantization.loss_points == 1.0
