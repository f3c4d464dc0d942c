"""The worker's tokenizer (tokenizers library, straight from tokenizer.json) gives transformers' ids,
and a CPU worker on ONNX Runtime runs without torch or transformers installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from transformers import AutoTokenizer

from handler.errors import ArchiveError
from handler.tokenizer import FastTokenizer
from harness.models import model_dir_like_mar

TEXTS = [
    "I absolutely love this, it is the best purchase I have made all year!",
    "Crème brûlée, naïve café — ÀÉÎÕÜ",
    "这个产品很好，物超所值！",
    "emoji 😀👍 and\ttabs\nnew lines",
    "",
    "   ",
    "word " * 300,
    "don't won't can't U.S.A. e-mail@example.com #hashtag @user http://x.y/z?a=1",
]


@pytest.mark.parametrize("max_length", [8, 128])
def test_ids_and_truncation_match_transformers(tiny_checkpoint, max_length):
    ours = FastTokenizer(tiny_checkpoint).encode_batch(TEXTS, max_length)
    reference = AutoTokenizer.from_pretrained(tiny_checkpoint, local_files_only=True)
    expected = reference(TEXTS, truncation=True, max_length=max_length, return_token_type_ids=True)
    assert [encoded.ids for encoded in ours] == expected["input_ids"]
    assert [encoded.type_ids for encoded in ours] == expected["token_type_ids"]
    assert [encoded.truncated for encoded in ours] == [bool(encoding.overflowing) for encoding in expected.encodings]
    assert ours[6].truncated and not ours[0].truncated or max_length == 8


def test_vocabulary_size_and_pad_id_match_transformers(tiny_checkpoint):
    ours = FastTokenizer(tiny_checkpoint)
    reference = AutoTokenizer.from_pretrained(tiny_checkpoint, local_files_only=True)
    assert len(ours) == len(reference)
    assert ours.pad_id == reference.pad_token_id


def test_a_checkpoint_without_tokenizer_json_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ArchiveError, match="save_pretrained"):
        FastTokenizer(tmp_path)


TORCH_FREE_WORKER = textwrap.dedent(
    """
    import json, sys
    sys.modules["torch"] = None          # `import torch` now raises ImportError, as if it were not installed
    sys.modules["transformers"] = None
    from harness.inprocess import handle_batch, started_handler
    handler, context = started_handler(sys.argv[1], model_yaml={"handler": {"backend": "auto", "num_threads": 1}})
    responses, statuses = handle_batch(handler, context, [b"hello there", b'{"text": ["one", "two"]}'])
    print(json.dumps({"responses": responses, "statuses": statuses, "skipped": handler.skipped_backends}))
    """
)


def test_a_cpu_worker_on_onnxruntime_needs_neither_torch_nor_transformers(tiny_checkpoint, tiny_export, tmp_path):
    model_dir = model_dir_like_mar(tiny_checkpoint, tiny_export, tmp_path / "unpacked_mar")
    result = subprocess.run([sys.executable, "-c", TORCH_FREE_WORKER, str(model_dir)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [status for status, _ in report["statuses"]] == [200, 200]
    assert report["responses"][0]["backend"] == "onnxruntime" and len(report["responses"][1]) == 2
    assert all("no GPU" in reason for reason in report["skipped"])
