"""Health probes that an orchestrator runs without a token (exit status 0 = healthy, one JSON line).

    python -m ops.health live  [--config config.properties]
    python -m ops.health ready [--config config.properties] [--key-dir .] [--model bert_trt ...]

TorchServe 0.12 answers ``/ping`` without a token with 400, and its ``/ping`` stays "Healthy" while a
worker is loading or has just died (it turns Unhealthy only after ``maxRetryTimeoutInSec``), so
neither probe uses it:

* **live** — ``GET <inference>/api-description``, which 0.12 serves before its token check. Proves the
  frontend (the JVM) is up and accepts connections on the inference port. Says nothing about models:
  use it to restart a hung or dead server, never to route traffic.
* **ready** — the management API's description of each model, read with the management key from
  key_file.json on the same machine (the probe runs where the server runs, e.g. a container's
  HEALTHCHECK or a Kubernetes exec probe). Ready means every model has at least ``--min-ready``
  workers in state READY: each has loaded its backend and answered a warm-up batch. A model still
  loading, or whose only worker died and is restarting, is not ready.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ops.keys import KeyFileError, is_key_refusal, read_key
from ops.properties import ServerAddresses


@dataclass
class Health:
    """A probe's verdict and what it saw."""

    healthy: bool
    detail: str
    workers: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"healthy": self.healthy, "detail": self.detail, "ready_workers": self.workers})


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, str]:
    """(status, body) of a GET; status 0 when nothing answers."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")
    except OSError as error:
        return 0, str(error)


def live(inference_url: str, timeout: float = 5) -> Health:
    """The frontend answers on the inference port (no token, no model data)."""
    status, body = http_get(f"{inference_url}/api-description", timeout=timeout)
    return Health(status == 200, f"{inference_url}/api-description answered {status}" if status else f"no answer from {inference_url}: {body}")


def ready_workers(management_url: str, key_dir: str | Path, model: str, timeout: float = 5) -> tuple[int, str]:
    """(READY workers of `model`, why not when it is 0); re-reads the key once if it was just renewed."""
    for attempt in range(2):
        try:
            key = read_key(key_dir, "management", timeout=0)
        except KeyFileError as error:
            return 0, str(error)
        status, body = http_get(f"{management_url}/models/{model}", {"Authorization": f"Bearer {key}"}, timeout)
        if not (is_key_refusal(status, body) and attempt == 0):
            break
    if status != 200:
        hint = " (the management key was refused: is `python -m ops.keys renew` running?)" if is_key_refusal(status, body) else ""
        return 0, f"describe {model}: {status or 'no answer'} {body[:200]}{hint}"
    workers = json.loads(body)[0].get("workers", [])
    ready = sum(worker.get("status") == "READY" for worker in workers)
    return ready, "" if ready else f"{model}: no READY worker ({[w.get('status') for w in workers]})"


def ready(management_url: str, key_dir: str | Path, models: list[str], min_ready: int = 1, timeout: float = 5) -> Health:
    """Every model has at least `min_ready` READY workers."""
    counts, problems = {}, []
    for model in models:
        counts[model], problem = ready_workers(management_url, key_dir, model, timeout)
        if counts[model] < min_ready:
            problems.append(problem or f"{model}: {counts[model]} READY workers < {min_ready}")
    return Health(not problems, "; ".join(problems) or f"every model has >= {min_ready} READY worker(s)", counts)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=["live", "ready"])
    parser.add_argument("--config", type=Path, default=Path("config.properties"))
    parser.add_argument("--key-dir", type=Path, default=Path("."), help="the folder TorchServe was started from (holds key_file.json)")
    parser.add_argument("--model", action="append", help="model that must be ready (repeat; default bert_trt)")
    parser.add_argument("--min-ready", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=5)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    server = ServerAddresses.from_properties(args.config)
    if args.probe == "live":
        health = live(server.inference_url, args.timeout)
    else:
        health = ready(server.management_url, args.key_dir, args.model or ["bert_trt"], args.min_ready, args.timeout)
    print(health.to_json())
    sys.exit(0 if health.healthy else 1)


if __name__ == "__main__":
    main()
