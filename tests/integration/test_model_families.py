"""Every served encoder family, from a tiny random checkpoint built here: export with ONNX parity (texts cut
at max_length included, so position limits are exercised), a .mar, and a prediction from a real TorchServe.
Unsupported architectures are refused when the spec is made (export and build_mar.py)."""

from __future__ import annotations

import json

import pytest

from handler import layout
from handler.errors import SpecError
from handler.spec import SUPPORTED_MODEL_TYPES, ModelSpec
from harness.models import LABELS, TINY_FAMILY_CONFIGS, random_family_checkpoint
from training.data import default_backbone_dir

LONG_TEXT = " ".join(["the parcel came late but the product itself works well and i would order again"] * 12)
PARITY_TEXTS = ["great value", "broken on arrival, refund please", "it arrived on monday", LONG_TEXT, LONG_TEXT[:200]] * 3


def model_name(family: str) -> str:
    return "fam_" + family.replace("-", "_")


@pytest.fixture(scope="module")
def family_exports(tmp_path_factory):
    """{family: (checkpoint, export dir, parity report)} for every supported family."""
    from export.onnx_export import check_onnx_parity, onnx_from_checkpoint

    exports = {}
    for family in SUPPORTED_MODEL_TYPES:
        root = tmp_path_factory.mktemp(model_name(family))
        checkpoint = random_family_checkpoint(family, root / "checkpoint", default_backbone_dir())
        onnx_path, _ = onnx_from_checkpoint(checkpoint, root / "export")
        exports[family] = (checkpoint, root / "export", check_onnx_parity(onnx_path, checkpoint, PARITY_TEXTS))
    return exports


@pytest.fixture(scope="module")
def family_server(family_exports, tmp_path_factory):
    """One TorchServe serving every family's archive (one worker each)."""
    from build_mar import parse_args
    from export.mar import build_mar
    from harness.torchserve import TorchServe

    store = tmp_path_factory.mktemp("family_store")
    for family, (checkpoint, export_dir, _) in family_exports.items():
        build_mar(parse_args([
            "--checkpoint", str(checkpoint), "--export-dir", str(export_dir), "--out", str(store), "--model-name", model_name(family),
            "--no-onnx-int8", "--min-workers", "1", "--max-workers", "1",
        ]))  # fmt: skip
    models = [f"{model_name(family)}={model_name(family)}.mar" for family in family_exports]
    with TorchServe(workdir=tmp_path_factory.mktemp("family_ts"), model_store=store, models=models).running() as server:
        yield server


def test_every_family_matches_pytorch_after_export_including_texts_cut_at_max_length(family_exports):
    assert set(family_exports) == set(TINY_FAMILY_CONFIGS) == set(SUPPORTED_MODEL_TYPES)
    for family, (_, _, report) in family_exports.items():
        assert report.argmax_agreement == 1.0 and report.max_abs_logit_diff < 1e-4, f"{family}: {report.summary()}"


def test_inputs_and_length_limits_follow_each_family(family_exports):
    specs = {family: ModelSpec.load(export_dir) for family, (_, export_dir, _) in family_exports.items()}
    with_types = {family for family, spec in specs.items() if "token_type_ids" in spec.input_names}
    assert with_types == {"bert", "electra"}  # RoBERTa/XLM-R (one type), DistilBERT and DeBERTa-v2 take no token_type_ids
    assert specs["roberta"].max_length == specs["xlm-roberta"].max_length == 64  # 65 positions, offset by pad_token_id + 1
    assert specs["bert"].max_length == specs["distilbert"].max_length == 128


def test_every_family_answers_over_http(family_server):
    for family in SUPPORTED_MODEL_TYPES:
        response = family_server.predict({"text": ["great value, would buy again", LONG_TEXT]}, model_name=model_name(family))
        assert response.status_code == 200, f"{family}: {response.text}"
        answers = response.json()
        assert [a["label"] in LABELS for a in answers] == [True, True]
        assert answers[1]["truncated"] is True and abs(sum(answers[0]["probabilities"].values()) - 1) < 1e-4


def test_unsupported_architectures_are_refused_with_the_supported_list(tmp_path):
    config = {"model_type": "gpt2", "id2label": {"0": "a", "1": "b"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SpecError, match="model_type 'gpt2' is not supported; supported encoder families: bert, roberta, xlm-roberta"):
        ModelSpec.from_checkpoint(tmp_path)
    assert layout.SPEC_FILE not in [p.name for p in tmp_path.iterdir()]
