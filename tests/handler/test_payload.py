"""Request parsing: every accepted payload shape, and a 4xx InvalidInput for each bad one."""

import pytest

from handler.errors import InvalidInput
from handler.http_status import error_body, http_status
from handler.payload import ParsedRequest, parse_request


@pytest.mark.parametrize(
    "request_dict, expected",
    [
        ({"body": b"I loved it"}, ParsedRequest(["I loved it"], False)),
        ({"data": "I loved it"}, ParsedRequest(["I loved it"], False)),
        ({"text": b"form field"}, ParsedRequest(["form field"], False)),
        ({"body": '{"text": "json text"}'}, ParsedRequest(["json text"], False)),
        ({"body": b'["a", "b"]'}, ParsedRequest(["a", "b"], True)),
        ({"body": {"text": ["x", "y"]}}, ParsedRequest(["x", "y"], True)),
        ({"body": ["already", "parsed"]}, ParsedRequest(["already", "parsed"], True)),
        ({"body": '"a JSON string"'}, ParsedRequest(["a JSON string"], False)),
        ({"body": "[sic] not JSON at all"}, ParsedRequest(["[sic] not JSON at all"], False)),
        ({"body": "42"}, ParsedRequest(["42"], False)),
        ({"body": "{sarcasm} lovely service"}, ParsedRequest(["{sarcasm} lovely service"], False)),
        ({"body": "Ünïcödé 中文 ok".encode()}, ParsedRequest(["Ünïcödé 中文 ok"], False)),
    ],
)
def test_accepted_payloads(request_dict, expected):
    assert parse_request(request_dict) == expected


@pytest.mark.parametrize(
    "request_dict, fragment",
    [
        ({}, "empty request"),
        ({"unrelated": b"x"}, "Content-Type: text/plain"),
        ({"body": b""}, "is empty"),
        ({"body": "   "}, "is empty"),
        ({"body": b"\xff\xfe bad"}, "not valid UTF-8"),
        ({"body": '{"txt": "wrong key"}'}, '"text" field'),
        ({"body": '{"text": "unclosed"'}, "malformed JSON"),
        ({"body": "[]"}, "empty list"),
        ({"body": '["ok", ""]'}, "index 1 is empty"),
        ({"body": '["ok", 3]'}, "index 1 must be a string"),
        ({"body": {"text": 5}}, "got int"),
        ({"body": '{"text": "\\ud83d broken emoji"}'}, "not valid Unicode"),
        ({"body": 3.5}, "got float"),
    ],
)
def test_bad_payloads_raise_400_with_a_reason(request_dict, fragment):
    with pytest.raises(InvalidInput) as caught:
        parse_request(request_dict)
    assert http_status(caught.value) == 400
    assert fragment in caught.value.message
    assert error_body(caught.value) == {"error": caught.value.message, "code": 400}


def test_too_many_texts_is_413():
    with pytest.raises(InvalidInput) as caught:
        parse_request({"body": ["t"] * 5}, max_texts=4)
    assert http_status(caught.value) == 413
