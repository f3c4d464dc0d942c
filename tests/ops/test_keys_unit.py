"""key_file.json parsing and the renewal decision, without a server."""

from __future__ import annotations

import datetime
import json

import pytest

from ops.keys import KeyFileError, is_key_refusal, parse_expiration, read_keys


def write_key_file(directory, inference_left_s: float, management_left_s: float) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp = lambda seconds: (now + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f123Z")  # noqa: E731  nanoseconds, as Java writes
    data = {
        "management": {"key": "M", "expiration time": stamp(management_left_s)},
        "inference": {"key": "I", "expiration time": stamp(inference_left_s)},
        "API": {"key": "A"},
    }
    (directory / "key_file.json").write_text(json.dumps(data))


def test_java_instant_with_nanoseconds_parses_as_utc():
    parsed = parse_expiration("2026-11-26T12:35:25.223248537Z")
    assert parsed == datetime.datetime(2026, 11, 26, 12, 35, 25, 223248, tzinfo=datetime.timezone.utc)


def test_read_keys_gives_values_and_time_left(tmp_path):
    write_key_file(tmp_path, inference_left_s=100, management_left_s=-5)
    keys = read_keys(tmp_path)
    assert (keys["inference"].value, keys["management"].value, keys["API"].value) == ("I", "M", "A")
    assert 95 < keys["inference"].seconds_left() <= 100
    assert keys["management"].seconds_left() < 0
    assert keys["API"].seconds_left() == float("inf")


def test_missing_key_file_says_where_it_looked(tmp_path):
    with pytest.raises(KeyFileError, match="key_file.json"):
        read_keys(tmp_path)


def test_only_invalid_key_answers_count_as_refusals():
    assert is_key_refusal(400, '{"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed."}')
    assert not is_key_refusal(400, '{"error": "text is empty", "code": 400}')
    assert not is_key_refusal(200, "InvalidKeyException")
