"""Servers started as subprocesses by tests and benchmarks: wait until one answers ready, or say why not."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import requests

from handler.errors import BertTrtError


class ServerStartError(BertTrtError):
    """A server subprocess exited, or did not answer ready in time; the message names its log."""


def wait_until_ready(process: subprocess.Popen, ready_url: str, log: Path, timeout: float = 240) -> None:
    """Poll `ready_url` until it answers 200; raise `ServerStartError` if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(f"server exited with {process.returncode} before it was ready; {log} ends:\n{tail(log)}")
        try:
            if requests.get(ready_url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise ServerStartError(f"server not ready within {timeout:.0f} s at {ready_url}; {log} ends:\n{tail(log)}")


def tail(log: Path, characters: int = 3000) -> str:
    return log.read_text(errors="replace")[-characters:] if log.is_file() else "(no log)"
