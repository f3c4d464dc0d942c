"""The HTTP answer to a rejected request, shared by the two HTTP doors (TorchServe's /predictions and the
KServe server's REST API): a status code and the body ``{"error": "...", "code": <status>}``."""

from __future__ import annotations

import orjson

from handler.errors import InvalidInput, ModelNotReady, Overloaded, RequestRejected, TooManyTexts

#: most specific class first; a `RequestRejected` not listed is a 400
HTTP_STATUS: tuple[tuple[type[RequestRejected], int], ...] = (
    (TooManyTexts, 413),
    (InvalidInput, 400),
    (ModelNotReady, 503),
    (Overloaded, 503),
)


def http_status(error: RequestRejected) -> int:
    """The HTTP status of a rejected request."""
    for kind, status in HTTP_STATUS:
        if isinstance(error, kind):
            return status
    return 400


def error_body(error: RequestRejected) -> dict:
    """The JSON body sent back for a rejected request."""
    return {"error": error.message, "code": http_status(error)}


def error_bytes(error: RequestRejected) -> bytes:
    """`error_body` encoded as JSON."""
    return orjson.dumps(error_body(error))
