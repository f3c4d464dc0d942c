"""The KServe server's v1 predictions without KServe's per-request machinery.

Through KServe's FastAPI app a v1 request costs ~1 ms of the event loop's time on the H200 machine's host
(routing, pydantic, a timing middleware that calls getrusage twice and logs a trace line per request),
which caps one server process near 1,000 requests/s whatever the GPU does (bench/gpu_host_path.py,
docs/gpu-and-tensorrt.md). `FastPredictDoor` sits in front of that app as plain ASGI: POST /v1/models/<model>:predict
is decoded, batched and answered here (the same decoding, answers, rejections and metrics as before:
kserve_server/model.py), everything else (v2, metadata, health, /metrics) goes on to KServe's app, except
KServe's model-repository routes (POST /v2/repository/models/<name>/load | unload: a management API that
would let any caller unload the model), which are answered 404 here.
"""

from __future__ import annotations

import logging

import orjson

from handler.errors import InvalidInput, ModelNotReady, RequestRejected
from handler.http_status import error_bytes, http_status

logger = logging.getLogger(__name__)

JSON_HEADERS = [(b"content-type", b"application/json")]
#: path prefixes of KServe's routes that change what is served (model load / unload): never passed to KServe's app
MANAGEMENT_PATH_PREFIXES = ("/v2/repository",)
NO_MANAGEMENT = "this server has no management API: the model is fixed at start (--mar); deploy a new revision to change it"


class FastPredictDoor:
    """ASGI app: the v1 predict route of `model` answered directly, management routes refused (404), any
    other request passed to `app`."""

    def __init__(self, app, model):
        self.app = app
        self.model = model
        self.path = f"/v1/models/{model.name}:predict"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(MANAGEMENT_PATH_PREFIXES):
            await self.respond(send, 404, orjson.dumps({"error": NO_MANAGEMENT, "code": 404}))
            return
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await self.respond(send, *await self.answer(bytes(body)))

    async def respond(self, send, status: int, payload: bytes) -> None:
        """Send one JSON response."""
        headers = [*JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def answer(self, body: bytes) -> tuple[int, bytes]:
        """(status, JSON body) of one v1 request: predictions, or the service's rejection."""
        try:
            if not self.model.ready:
                raise ModelNotReady("the model is not loaded (it is starting or shutting down): retry, or send to another replica")
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as error:
                raise InvalidInput(f"request body is not valid JSON ({error}); send {{\"instances\": [...]}}") from None
            return 200, orjson.dumps(await self.model.predict(payload))
        except RequestRejected as rejection:
            return http_status(rejection), error_bytes(rejection)
        except Exception as error:  # a backend failure: this request fails, the server keeps answering
            logger.exception("v1 predict failed")
            return 500, orjson.dumps({"error": f"{type(error).__name__}: {error}", "code": 500})
