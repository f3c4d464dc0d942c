"""KServe's REST server (FastAPI + uvicorn) around one model, on the address we choose.

KServe's own `ModelServer.start` listens on 0.0.0.0 and also starts gRPC; here one REST server is
built from KServe's public pieces so that it can listen on loopback, and the handler's `RequestError`
is answered with the handler's error body and status (as on TorchServe).
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import Request
from fastapi.responses import JSONResponse

from handler.payload import RequestError


async def request_error_response(request: Request, error: RequestError) -> JSONResponse:
    """{"error": "...", "code": 4xx} with that status: the same body TorchServe's path sends."""
    return JSONResponse(status_code=error.status, content=error.to_response())


def serve(model, host: str, port: int, access_log: bool = False) -> None:
    """Serve `model` (loaded) over KServe's v1 / v2 REST API until SIGTERM or SIGINT."""
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.model_server import ModelServer, app
    from kserve.protocol.rest.server import RESTServer

    app.add_exception_handler(RequestError, request_error_response)
    server = ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False)
    server.register_model(model)
    model.enable_latency_logging = False
    if not access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, port, workers=1)
    rest.config.host = host
    logging.getLogger(__name__).info("serving %s on http://%s:%d (v1 and v2 REST)", model.name, host, port)
    asyncio.run(rest.start())
