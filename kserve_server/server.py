"""KServe's REST server (FastAPI + uvicorn) and its OIP gRPC server around one model, on the address we choose.

KServe's own `ModelServer.start` listens on 0.0.0.0; here both servers are built from KServe's public
pieces so that they listen where we say (loopback by default), and the service's rejections are answered
with the door-neutral message and each protocol's status (handler/http_status.py, kserve_server/grpc_door.py).
REST and gRPC run in one event loop and share one model, one batcher and one metrics registry.

No management API: KServe's model-repository calls (REST POST /v2/repository/models/<name>/load | unload,
gRPC RepositoryModelLoad / RepositoryModelUnload) would let any caller that reaches the port unload the
model; the REST ones are refused in front of KServe's app (kserve_server/fast_door.py), the gRPC ones answer
UNIMPLEMENTED (kserve_server/grpc_door.py). What is served is fixed at start (--mar).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from handler.errors import RequestRejected
from handler.http_status import error_body, http_status
from kserve_server.fast_door import FastPredictDoor
from kserve_server.workers import merged_metrics_enabled

logger = logging.getLogger(__name__)

#: seconds in-flight gRPC calls get to finish at shutdown
GRPC_GRACE_S = 10


async def rejection_response(request: Request, error: RequestRejected) -> JSONResponse:
    """{"error": "...", "code": 4xx} with that status: the same body TorchServe's door sends."""
    return JSONResponse(status_code=http_status(error), content=error_body(error))


async def merged_metrics(request: Request) -> Response:
    """/metrics of several worker processes: every worker's figures, merged (kserve_server/workers.py)."""
    from prometheus_client import CollectorRegistry, exposition, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    encoder, content_type = exposition.choose_encoder(request.headers.get("accept"))
    return Response(content=encoder(registry), headers={"content-type": content_type})


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket that other processes may bind too (SO_REUSEPORT: the kernel spreads
    connections across them), with TCP_NODELAY for the connections it accepts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # accepted connections inherit it: a reply's headers and body go out at once, never held back by Nagle's
    # algorithm until the client's delayed ACK (40 ms per request, measured before this line existed)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise RuntimeError(f"cannot listen on {host}:{port} ({error.strerror}): choose another --http-port") from None
    listener.listen(2048)
    listener.setblocking(False)
    return listener


def serve(model, host: str, http_port: int, grpc_port: int | None = None, access_log: bool = False, share_ports: bool = False) -> None:
    """Serve `model` (loaded) over KServe's v1 / v2 REST API, and OIP gRPC on `grpc_port` (None: no
    gRPC), until SIGTERM or SIGINT. `share_ports`: one of several worker processes on the same ports."""
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.model_server import ModelServer, app
    from kserve.protocol.rest.server import RESTServer

    from kserve_server.grpc_door import grpc_server

    app.add_exception_handler(RequestRejected, rejection_response)
    server = ModelServer(http_port=http_port, enable_grpc=False, workers=1, enable_latency_logging=False)
    server.register_model(model)
    model.enable_latency_logging = False
    if not access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, http_port, workers=1)
    rest.config.host = host
    rest.config.app = FastPredictDoor(app, model)  # v1 predict answered in front of KServe's app (fast_door.py)
    if merged_metrics_enabled():  # ahead of KServe's own /metrics route, which shows one process only
        app.router.routes.insert(0, APIRoute("/metrics", merged_metrics, methods=["GET"]))

    async def run() -> None:
        grpc = grpc_server(server, host, grpc_port, share_ports) if grpc_port is not None else None
        if grpc is not None:
            await grpc.start()
        logger.info("serving %s on http://%s:%d (v1 and v2 REST)%s", model.name, host, http_port, f" and grpc://{host}:{grpc_port} (v2)" if grpc else "")
        try:
            if share_ports:  # RESTServer.start, on a socket the other workers bind too
                rest.create_application()
                await uvicorn.Server(rest.config).serve(sockets=[shared_socket(host, http_port)])
            else:
                await rest.start()  # returns when uvicorn stops (SIGTERM / SIGINT)
        finally:
            if grpc is not None:
                await grpc.stop(GRPC_GRACE_S)
            model.stop()

    asyncio.run(run())
