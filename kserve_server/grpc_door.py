"""The Open Inference Protocol over gRPC (KServe's `GRPCInferenceService`), on the address we choose.

KServe's own servicer answers every call (ModelInfer, ModelReady, ModelMetadata, ServerLive, ...); this
module adds the mapping of the service's rejections to gRPC status codes, which KServe's interceptor
would otherwise answer as INTERNAL:
    InvalidInput (TooManyTexts included)  -> INVALID_ARGUMENT  (do not retry: the request is wrong)
    ModelNotReady, Overloaded             -> UNAVAILABLE       (retry later or on another replica)
and refuses KServe's model-repository calls (RepositoryModelLoad / RepositoryModelUnload) with UNIMPLEMENTED:
no caller may change what is served (no management API; over REST: kserve_server/fast_door.py).
"""

from __future__ import annotations

import logging
from concurrent import futures

from grpc import StatusCode, aio
from grpc_interceptor.exceptions import Unimplemented
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.servicer import InferenceServicer

from handler.errors import InvalidInput, ModelNotReady, Overloaded, RequestRejected
from kserve_server.fast_door import NO_MANAGEMENT

logger = logging.getLogger(__name__)

#: most specific class first; a `RequestRejected` not listed is INVALID_ARGUMENT
GRPC_STATUS: tuple[tuple[type[RequestRejected], StatusCode], ...] = (
    (InvalidInput, StatusCode.INVALID_ARGUMENT),
    (ModelNotReady, StatusCode.UNAVAILABLE),
    (Overloaded, StatusCode.UNAVAILABLE),
)
#: what one gRPC message may carry (KServe's default: 4 MiB); a request with 256 long texts fits easily
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def grpc_status(error: RequestRejected) -> StatusCode:
    """The gRPC status code of a rejected request."""
    for kind, code in GRPC_STATUS:
        if isinstance(error, kind):
            return code
    return StatusCode.INVALID_ARGUMENT


class RejectionToStatusInterceptor(ExceptionToStatusInterceptor):
    """KServe's exception mapping, plus the service's rejections with their own codes and messages."""

    async def handle_exception(self, ex, request_or_iterator, context, method_name):
        if isinstance(ex, RequestRejected):
            await context.abort(grpc_status(ex), ex.message)
        await super().handle_exception(ex, request_or_iterator, context, method_name)


class InferenceOnlyServicer(InferenceServicer):
    """KServe's servicer without its model-repository calls."""

    async def RepositoryModelLoad(self, request, context):
        raise Unimplemented(NO_MANAGEMENT)

    async def RepositoryModelUnload(self, request, context):
        raise Unimplemented(NO_MANAGEMENT)


def grpc_server(server, host: str, port: int, share_port: bool = False) -> aio.Server:
    """An asyncio gRPC server answering the OIP v2 service of KServe's `ModelServer` `server` on host:port
    (not started). Raises `RuntimeError` when the port cannot be bound; `share_port`: other worker
    processes bind it too (SO_REUSEPORT), else a port already taken is an error."""
    servicer = InferenceOnlyServicer(server.dataplane, server.model_repository_extension)
    grpc = aio.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=(RejectionToStatusInterceptor(),),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", int(share_port)),
        ],  # fmt: skip
    )
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, grpc)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if grpc.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot listen for gRPC on {address}: choose another --grpc-port")
    return grpc
