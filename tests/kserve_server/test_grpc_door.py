"""The gRPC door's status for each rejection the service gives (the HTTP doors' are in tests/handler/test_service.py)."""

import pytest
from grpc import StatusCode

from handler.errors import InvalidInput, ModelNotReady, Overloaded, TooManyTexts
from kserve_server.grpc_door import grpc_status


@pytest.mark.parametrize(
    "rejection, code",
    [
        (InvalidInput("bad"), StatusCode.INVALID_ARGUMENT),
        (TooManyTexts("split it"), StatusCode.INVALID_ARGUMENT),
        (ModelNotReady("later"), StatusCode.UNAVAILABLE),
        (Overloaded("later"), StatusCode.UNAVAILABLE),
    ],
)
def test_each_rejection_has_its_grpc_status(rejection, code):
    assert grpc_status(rejection) == code
