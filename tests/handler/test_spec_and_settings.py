"""The shared spec round-trips, and model-config.yaml's handler section is validated."""

import pytest

from handler.settings import HandlerSettings
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
    with pytest.raises(FileNotFoundError, match="export.onnx_export"):
        ModelSpec.load(tmp_path)


def test_settings_defaults_and_values():
    assert HandlerSettings.from_model_yaml({}) == HandlerSettings()
    settings = HandlerSettings.from_model_yaml({"handler": {"backend": "torch_cpu", "max_length": 64, "num_threads": "auto"}})
    assert (settings.backend, settings.max_length, settings.num_threads) == ("torch_cpu", 64, None)


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


def test_threads_split_cores_among_workers(monkeypatch):
    monkeypatch.setattr("handler.settings.usable_cores", lambda: 8)
    assert HandlerSettings().threads_per_worker(2) == 4
    assert HandlerSettings().threads_per_worker(16) == 1
    assert HandlerSettings(num_threads=3).threads_per_worker(2) == 3
