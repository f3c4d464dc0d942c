"""Turning one TorchServe request into texts, and errors into HTTP answers.

TorchServe hands the handler a list of dicts; the payload sits under ``body`` or ``data``
(or ``text`` for a form field) as bytes, str, or JSON the frontend already parsed
(``Content-Type: application/json``). Accepted payloads:

* raw text: ``I loved it``
* a JSON object: ``{"text": "I loved it"}`` or ``{"text": ["a", "b"]}``, with optional response options
  (`ResponseOptions`): ``"top_k": 2``, ``"return_logits": true``, ``"threshold": 0.3`` (multi-label models)
* a JSON list of texts: ``["a", "b"]`` (answered with a list, in order)
* pair models (the spec's text_pair): ``{"text": "A", "text_pair": "B"}``, ``{"text": ["A1", "A2"],
  "text_pair": ["B1", "B2"]}`` or a list of such objects (transformers' pipeline naming)
* a reranking request (pair models): ``{"query": "Q", "texts": ["P1", "P2", ...]}`` with optional ``top_k``
  and ``return_text``: every (query, passage) pair scored, answered as one list sorted by score
  (text-embeddings-inference's /rerank)

Behind TorchServe's "kserve" envelope (KServe's TorchServe runtime) each item is one of the body's
"instances" instead: a text or {"text": ...}. Whether the model takes what was sent (pairs, options) is
checked against the model by the service (`TextClassifier.check`). Anything else raises `InvalidInput` (`TooManyTexts` for a list
longer than max_texts_per_request); each door maps them to its own status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from handler.errors import InvalidInput, TooManyTexts

PAYLOAD_KEYS = ("body", "data", "text")
#: one input of a request: a text, or (text, text_pair) for a pair model
TextInput = str | tuple[str, str]
DEFAULT_MAX_TEXTS_PER_REQUEST = 256


@dataclass(frozen=True)
class ResponseOptions:
    """What a request asks to get back beyond label, score and probabilities."""

    #: the `top_k` best labels with their scores, best first
    top_k: int | None = None
    #: the raw scores (logits) per label
    return_logits: bool = False
    #: multi-label models: a label is predicted when its probability is at least this (default 0.5)
    threshold: float | None = None
    #: reranking requests: each result carries its passage
    return_text: bool = False


OPTION_FIELDS = ("top_k", "return_logits", "threshold")
PAIR_FIELDS = ("text", "text_pair")
RERANK_FIELDS = ("query", "texts", "return_text")


@dataclass(frozen=True)
class ParsedRequest:
    """The inputs of one request (texts, or (text, text_pair) pairs), whether the answer must be a list, the
    response options it asked for, and whether it is a reranking request (its pairs share one query)."""

    texts: list[TextInput]
    wants_list: bool
    options: ResponseOptions = ResponseOptions()
    rerank: bool = False


def parse_request(request: dict, max_texts: int = DEFAULT_MAX_TEXTS_PER_REQUEST) -> ParsedRequest:
    """Extract the texts from one TorchServe request dict or raise `InvalidInput`."""
    payload = _payload_of(request)
    if isinstance(payload, (bytes, bytearray)):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidInput(f"request body is not valid UTF-8 (byte {err.start}); send UTF-8 text or JSON") from None
    if isinstance(payload, str):
        payload = _maybe_json(payload)
    return texts_from_value(payload, max_texts)


def is_torchserve_request(request) -> bool:
    """Whether a batch item is a request dict from TorchServe's frontend (a body or a "data" field), not an
    instance handed over by a request envelope (whose `format_output` wants JSON values, not bytes)."""
    return isinstance(request, dict) and ("body" in request or "data" in request)


def _payload_of(request: dict):
    if isinstance(request, (str, bytes, bytearray)):  # one instance unwrapped by TorchServe's "kserve" envelope
        return request
    if not isinstance(request, dict):
        raise InvalidInput("malformed request: expected a TorchServe request dict")
    for key in PAYLOAD_KEYS:
        value = request.get(key)
        if value is not None:
            return value
    raise InvalidInput(
        'empty request: send text with Content-Type: text/plain, or {"text": "..."} / a JSON list of texts with '
        "Content-Type: application/json (curl -d without a Content-Type sends a form, which arrives empty)"
    )


def _maybe_json(text: str):
    """Parse JSON objects, lists and strings; leave anything else as raw text."""
    stripped = text.lstrip()
    if not stripped or stripped[0] not in '{["':
        return text
    try:
        value = json.loads(stripped)
    except RecursionError:
        raise InvalidInput("JSON nested too deeply: send text, {\"text\": ...} or a flat list of texts") from None
    except ValueError as err:
        if stripped[0] == "{" and stripped[1:].lstrip().startswith('"'):
            raise InvalidInput(f"malformed JSON object: {err.msg} at position {err.pos}") from None
        return text  # e.g. "[sic] great film" or "{sarcasm} lovely" is text, not JSON
    return value if isinstance(value, (dict, list, str)) else text


def texts_from_value(value, max_texts: int = DEFAULT_MAX_TEXTS_PER_REQUEST) -> ParsedRequest:
    """The inputs of an already-decoded payload (a text, {"text": ...} with or without "text_pair", a list of
    texts or of pair objects, or a {"query", "texts"} reranking request), checked the same way for every
    front door (TorchServe's /predictions, KServe's v1 and v2), or `InvalidInput`."""
    if isinstance(value, dict):
        if "query" in value or "texts" in value:
            return rerank_request(value, max_texts)
        if "text" not in value:
            raise InvalidInput(f'JSON object must have a "text" field (and "text_pair" for a pair model); got fields {sorted(value)[:10]}')
        unknown = sorted(set(value) - {*PAIR_FIELDS, *OPTION_FIELDS})
        if unknown:
            raise InvalidInput(f"unknown fields {unknown[:10]} in the JSON object; known: {', '.join(PAIR_FIELDS + OPTION_FIELDS)}")
        options = response_options(value)
        if "text_pair" in value:
            return ParsedRequest(*paired(value["text"], value["text_pair"], max_texts), options=options)
        value = value["text"]
        if isinstance(value, str):
            return ParsedRequest([checked_text(value, None)], wants_list=False, options=options)
        if isinstance(value, list):
            checked_count(len(value), max_texts)
            return ParsedRequest([checked_text(item, i) for i, item in enumerate(value)], wants_list=True, options=options)
        raise InvalidInput(f'"text" must be a string or a list of strings, got {type(value).__name__}')
    if isinstance(value, str):
        return ParsedRequest([checked_text(value, None)], wants_list=False)
    if isinstance(value, list):
        checked_count(len(value), max_texts)
        return ParsedRequest([list_item(item, i) for i, item in enumerate(value)], wants_list=True)
    raise InvalidInput(f"expected text, a JSON object with \"text\", or a list of texts; got {type(value).__name__}")


def paired(texts, pairs, max_texts: int) -> tuple[list[TextInput], bool]:
    """(text, text_pair) inputs of {"text": ..., "text_pair": ...}: two strings, or two lists of one length."""
    if isinstance(texts, str) and isinstance(pairs, str):
        return [(checked_text(texts, None), checked_text(pairs, None, "text_pair"))], False
    if isinstance(texts, list) and isinstance(pairs, list):
        if len(texts) != len(pairs):
            raise InvalidInput(f'"text" has {len(texts)} items and "text_pair" {len(pairs)}: send one text_pair per text')
        checked_count(len(texts), max_texts)
        return [(checked_text(a, i), checked_text(b, i, "text_pair")) for i, (a, b) in enumerate(zip(texts, pairs))], True
    raise InvalidInput(f'"text" and "text_pair" must both be strings or both lists of strings, got {type(texts).__name__} and {type(pairs).__name__}')


def list_item(item, index: int) -> TextInput:
    """One item of a JSON list: a text, or a {"text", "text_pair"} object (options go on the enclosing object)."""
    if isinstance(item, dict):
        unknown = sorted(set(item) - set(PAIR_FIELDS))
        if unknown or "text" not in item:
            raise InvalidInput(f'item {index}: a list item is a text or {{"text": ..., "text_pair": ...}}; got fields {sorted(item)[:10]} '
                               '(response options go on one object: {"text": [...], "text_pair": [...], "top_k": 2})')  # fmt: skip
        if "text_pair" not in item:
            return checked_text(item["text"], index)
        return (checked_text(item["text"], index), checked_text(item["text_pair"], index, "text_pair"))
    return checked_text(item, index)


def rerank_request(value: dict, max_texts: int) -> ParsedRequest:
    """A {"query": "Q", "texts": [...], "top_k": k, "return_text": bool} request: one (query, text) pair per text."""
    unknown = sorted(set(value) - {*RERANK_FIELDS, "top_k"})
    if unknown:
        raise InvalidInput(f"unknown fields {unknown[:10]} in the reranking request; known: query, texts, top_k, return_text")
    if "query" not in value or "texts" not in value:
        raise InvalidInput('a reranking request has "query" (a string) and "texts" (a list of strings)')
    query, texts = value["query"], value["texts"]
    if not isinstance(texts, list):
        raise InvalidInput(f'"texts" must be a list of strings, got {type(texts).__name__}')
    checked_count(len(texts), max_texts)
    query = checked_text(query, None, "query")
    return_text = value.get("return_text", False)
    if not isinstance(return_text, bool):
        raise InvalidInput(f"return_text must be true or false, got {return_text!r}")
    options = replace(response_options({"top_k": value.get("top_k")}), return_text=return_text)
    return ParsedRequest([(query, checked_text(text, i)) for i, text in enumerate(texts)], wants_list=True, options=options, rerank=True)


def checked_count(count: int, max_texts: int) -> None:
    """`InvalidInput` for a request without texts, `TooManyTexts` for one with more than `max_texts`."""
    if not count:
        raise InvalidInput("empty list: send at least one text")
    if count > max_texts:
        raise TooManyTexts(f"too many texts in one request: {count} > {max_texts}; split it")


def response_options(fields: dict) -> ResponseOptions:
    """The response options of a request's JSON object, or `InvalidInput` naming the bad one."""
    top_k, return_logits, threshold = (fields.get(name) for name in OPTION_FIELDS)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InvalidInput(f"top_k must be a positive integer, got {top_k!r}")
    if return_logits is not None and not isinstance(return_logits, bool):
        raise InvalidInput(f"return_logits must be true or false, got {return_logits!r}")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1):
        raise InvalidInput(f"threshold must be a number from 0 to 1, got {threshold!r}")
    return ResponseOptions(top_k, bool(return_logits), None if threshold is None else float(threshold))


def checked_text(item, index: int | None, field: str = "text") -> str:
    """`item` if it is a non-empty, valid Unicode string, else `InvalidInput` naming the field (and index)."""
    where = "" if index is None else f" at index {index}"
    if not isinstance(item, str):
        raise InvalidInput(f"{field}{where} must be a string, got {type(item).__name__}")
    if not item.strip():
        raise InvalidInput(f"{field}{where} is empty")
    try:
        item.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates, e.g. a JSON "\ud83d" escape
        raise InvalidInput(f"{field}{where} is not valid Unicode (character {err.start}); send UTF-8 text") from None
    return item
