"""Steady load from client threads with one record per request: what fault tests and the soak need."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests

from handler.errors import BertTrtError
from harness.torchserve import TorchServe


@dataclass(frozen=True)
class Outcome:
    """One request: what was sent, when (monotonic seconds), how long it took, and the answer."""

    payload: object
    started: float
    seconds: float
    #: HTTP status, or 0 when no answer came (connection refused or reset, client timeout)
    status: int
    body: str
    error: str = ""

    @property
    def hung(self) -> bool:
        """No answer within the client's timeout."""
        return self.error == "Timeout"


def run_load(server: TorchServe, payloads: list, threads: int, seconds: float, model: str = "bert_trt", timeout: float = 30, max_requests: int | None = None) -> list[Outcome]:
    """`threads` clients posting `payloads` round-robin for `seconds` (or `max_requests` in all)."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    counter = [0]
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                if max_requests is not None and counter[0] >= max_requests:
                    return
                payload = payloads[counter[0] % len(payloads)]
                counter[0] += 1
            started = time.monotonic()
            try:
                response = server.predict(payload, model_name=model, timeout=timeout)
                outcome = Outcome(payload, started, time.monotonic() - started, response.status_code, response.text)
            except requests.Timeout:
                outcome = Outcome(payload, started, time.monotonic() - started, 0, "", "Timeout")
            except (requests.ConnectionError, OSError, BertTrtError) as error:  # refused, reset, or the key file gone after a stop
                outcome = Outcome(payload, started, time.monotonic() - started, 0, "", type(error).__name__)
            with lock:
                outcomes.append(outcome)

    pool = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(seconds + timeout + 30)
    return sorted(outcomes, key=lambda outcome: outcome.started)


def in_background(function, *args, **kwargs) -> tuple[threading.Thread, list]:
    """Run `function(*args, **kwargs)` in a thread; the returned list receives its result."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(function(*args, **kwargs)), daemon=True)
    thread.start()
    return thread, result
