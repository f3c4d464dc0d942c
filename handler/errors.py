"""The project's one error hierarchy. Every message says how to fix the problem.

Library code raises these; only a command-line `main()` turns them into exit status 1 (through
`run_cli`), and the handler turns backend refusals into a fallback.
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


def run_cli(main: Callable[[], object]) -> None:
    """Run a command-line `main()`: a `BertTrtError` becomes its message on stderr and exit status 1."""
    try:
        main()
    except BertTrtError as error:
        sys.exit(f"error: {error}")
