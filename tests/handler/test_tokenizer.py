"""The worker's tokenizer (tokenizers library, straight from tokenizer.json) gives transformers' ids,
and a CPU worker on ONNX Runtime runs without torch or transformers installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import hypothesis
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


# ---- the pure-Python WordPiece fast path (handler/tokenizer.py:WordPieceFastPath) -------------------------

ALL_BMP_CHARACTERS = [chr(code) for code in range(0x10000) if not 0xD800 <= code <= 0xDFFF]


def tokenizer_with_normalizer(checkpoint, tmp_path, **normalizer) -> FastTokenizer:
    """A copy of the checkpoint's tokenizer with BertNormalizer options replaced (cased models, accents kept)."""
    config = json.loads((checkpoint / "tokenizer.json").read_text())
    config["normalizer"].update(normalizer)
    (tmp_path / "tokenizer.json").write_text(json.dumps(config))
    return FastTokenizer(tmp_path)


def library_ids(tokenizer: FastTokenizer, texts: list[str]) -> list[list[int]]:
    return [encoding.ids for encoding in tokenizer.tokenizer.encode_batch(texts, add_special_tokens=False)]


@pytest.mark.parametrize("normalizer", [{}, {"lowercase": False}, {"lowercase": True, "strip_accents": False}, {"handle_chinese_chars": False}])
def test_fast_path_gives_the_library_ids_for_every_character_of_the_basic_multilingual_plane(tiny_checkpoint, tmp_path, normalizer):
    tokenizer = tokenizer_with_normalizer(tiny_checkpoint, tmp_path, **normalizer) if normalizer else FastTokenizer(tiny_checkpoint)
    assert tokenizer.fast_path is not None
    texts = [f"Ab{c}c {c}{c}9{c}" for c in ALL_BMP_CHARACTERS]
    fast = [tokenizer.fast_path.ids(text) for text in texts]
    expected = library_ids(tokenizer, texts)
    mismatched = [(text, ids, want) for text, ids, want in zip(texts, fast, expected) if ids is not None and ids != want]
    assert not mismatched, mismatched[:5]
    assert sum(ids is None for ids in fast) < 50  # only texts with combining marks that survive go to the library
    assert tokenizer.content_ids(texts) == expected


MIXED_ALPHABET = "abcXYZ019 ,.!?'-_\t\n[]#@éÉüßÅçñ中文字，。！“”‘’—…😀👍🏽\u0301\u0308\u200b\xa0\u3000ΣΟΔİıﬁ①Ⅷ\x00\x7f\ufffd"


@hypothesis.given(hypothesis.strategies.text(alphabet=hypothesis.strategies.sampled_from(MIXED_ALPHABET), max_size=60))
@hypothesis.settings(max_examples=600, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
def test_fast_path_and_library_agree_on_random_mixed_texts(tiny_checkpoint, text):
    tokenizer = fast_path_tokenizer(tiny_checkpoint)
    assert tokenizer.content_ids([text]) == library_ids(tokenizer, [text])


def fast_path_tokenizer(checkpoint, cache={}) -> FastTokenizer:  # noqa: B006 - one tokenizer per checkpoint for the property test
    if checkpoint not in cache:
        cache[checkpoint] = FastTokenizer(checkpoint)
    return cache[checkpoint]


def test_added_tokens_and_words_longer_than_wordpiece_allows_take_the_library_path_with_the_same_ids(tiny_checkpoint):
    tokenizer = FastTokenizer(tiny_checkpoint)
    texts = ["fill the [MASK] please", "[CLS] [SEP] [PAD] [UNK]", "[cls] lower case is not special", "x" * 150, "a" * 99 + " b" * 3]
    assert tokenizer.fast_path.ids(texts[0]) is None and tokenizer.fast_path.ids(texts[1]) is None
    assert tokenizer.content_ids(texts) == library_ids(tokenizer, texts)
    assert tokenizer.tokenizer.token_to_id("[MASK]") in tokenizer.content_ids(texts)[0]


def test_a_tokenizer_without_bert_layout_has_no_fast_path(tiny_checkpoint, tmp_path):
    config = json.loads((tiny_checkpoint / "tokenizer.json").read_text())
    config["pre_tokenizer"] = {"type": "Whitespace"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(config))
    tokenizer = FastTokenizer(tmp_path)
    assert tokenizer.fast_path is None
    texts = ["still tokenized, by the library", "中文"]
    assert tokenizer.content_ids(texts) == library_ids(tokenizer, texts)


def test_fast_path_is_safe_from_several_threads_learning_at_once(tiny_checkpoint):
    from concurrent.futures import ThreadPoolExecutor

    tokenizer = FastTokenizer(tiny_checkpoint)
    texts = [f"{c}word{i} Ünïcode {c}{chr(0x4E00 + i)}" for i, c in enumerate(ALL_BMP_CHARACTERS[0x2000:0x2400])]
    expected = library_ids(tokenizer, texts)
    shards = [texts[i::8] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(tokenizer.content_ids, shards))
    assert [ids for shard in results for ids in shard] == [ids for i in range(8) for ids in expected[i::8]]
