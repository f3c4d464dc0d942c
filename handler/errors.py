"""The project's one error hierarchy. Every message says how to fix the problem.

Library code raises these; only a command-line `main()` turns them into exit status 1 (through
`run_cli`), and the handler turns backend refusals into a fallback.

`RequestRejected` and its subclasses are the service's answers to one request that cannot be served.
They carry no transport status: each door maps them to its own (`handler/http_status.py` for the two
HTTP doors, `kserve_server/grpc_door.py` for gRPC).
"""

from __future__ import annotations

import sys
from typing import Callable


class BertTrtError(Exception):
    """Base of every error this project raises on purpose."""


class SettingsError(BertTrtError, ValueError):
    """A setting in model-config.yaml (or given to a backend) is unknown or out of range."""


class SpecError(BertTrtError, ValueError):
    """The serving spec (labels, lengths) or a checkpoint's config is not one this project can serve."""


class ArchiveError(BertTrtError):
    """A file the archive (or the folder laid out like it) should hold is missing or malformed."""


class DataError(BertTrtError):
    """Training or evaluation data (or the package that ships it) is missing or malformed."""


class BackendUnavailable(BertTrtError):
    """This backend cannot run on this machine; the message says why (and how to fix it)."""


class ExportError(BertTrtError):
    """An export step (ONNX, quantization, engine, .mar) could not produce its output."""


class ParityError(ExportError, AssertionError):
    """An exported model disagrees with PyTorch beyond the tolerance; the message lists every mismatch."""


class EngineBuildError(ExportError):
    """TensorRT is missing, refused the ONNX, or failed to build the engine."""


class RequestRejected(BertTrtError):
    """One request cannot be answered; the rest of its batch is. The message says what to change."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(RequestRejected, ValueError):
    """The request itself is wrong (payload, text, option): sending it again will fail again."""


class TooManyTexts(InvalidInput):
    """The request carries more texts than `max_texts_per_request`: split it."""


class ModelNotReady(RequestRejected):
    """The model is not loaded (yet, or any more): retry later or on another replica."""


class Overloaded(RequestRejected):
    """The server's queue is full: retry later or on another replica."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a command-line `main()`: a `BertTrtError` becomes its message on stderr and exit status 1."""
    try:
        main()
    except BertTrtError as error:
        sys.exit(f"error: {error}")
