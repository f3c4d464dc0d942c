"""Property tests of the request parser: whatever arrives, the answer is texts or a 4xx with a JSON error."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.errors import InvalidInput
from handler.http_status import error_body, http_status
from handler.payload import ParsedRequest, parse_request

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.sampled_from(["text", "data", "x"]) | st.text(max_size=5), children, max_size=4),
    max_leaves=30,
)
PAYLOADS = st.binary(max_size=400) | st.text(max_size=400) | JSON_VALUES | JSON_VALUES.map(json.dumps) | JSON_VALUES.map(lambda v: json.dumps(v).encode())
REQUESTS = st.dictionaries(st.sampled_from(["body", "data", "text", "other"]), PAYLOADS, max_size=3) | PAYLOADS


def check_outcome(request) -> None:
    try:
        parsed = parse_request(request, max_texts=8)
    except InvalidInput as error:
        assert 400 <= http_status(error) < 500
        body = json.loads(json.dumps(error_body(error)))
        assert body["code"] == http_status(error) and body["error"]
        return
    assert isinstance(parsed, ParsedRequest) and 1 <= len(parsed.texts) <= 8
    for text in parsed.texts:
        assert isinstance(text, str) and text.strip()
        text.encode("utf-8")  # no lone surrogates reach the tokenizer


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS)
def test_any_request_is_texts_or_a_4xx(request):
    check_outcome(request)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(), min_size=1, max_size=50))
def test_surrogates_and_control_characters_in_json_strings(text):
    check_outcome({"body": json.dumps({"text": text}, ensure_ascii=True).encode()})
    check_outcome({"body": json.dumps([text, "ok"], ensure_ascii=True)})


def test_hostile_shapes():
    cases = {
        "deeply nested list": "[" * 100_000 + "]" * 100_000,
        "deeply nested object": '{"text": ' * 50_000 + '"x"' + "}" * 50_000,
        "huge integer": "[" + "9" * 100_000 + "]",
        "NUL bytes": b"fine\x00text",
        "10k-item list": json.dumps(["a"] * 10_000),
        "invalid surrogate escape": b'{"text": "\\udc80"}',
    }
    for name, payload in cases.items():
        try:
            parsed = parse_request({"body": payload})
        except InvalidInput as error:
            assert 400 <= http_status(error) < 500, name
            continue
        assert all(isinstance(text, str) and text.strip() for text in parsed.texts), name
    with pytest.raises(InvalidInput) as caught:
        parse_request({"body": json.dumps(["a"] * 10_000)})
    assert http_status(caught.value) == 413 and "10000 > 256" in caught.value.message
