"""Drive the bert_trt handler in-process exactly as a TorchServe worker does (same Context class).

Used by unit tests and the in-process benchmarks; no Java, no HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def worker_context(model_dir: str | Path, gpu_id: int | None = None, batch_size: int = 32, model_yaml: dict | None = None):
    """A `ts.context.Context` like the one TorchServe builds for a worker of this model dir."""
    from ts.context import Context

    model_dir = Path(model_dir)
    if model_yaml is None and (model_dir / "model-config.yaml").is_file():
        model_yaml = yaml.safe_load((model_dir / "model-config.yaml").read_text())
    return Context("bert_trt", str(model_dir), {}, batch_size, gpu_id, "0.12.0", model_yaml_config=model_yaml or {})


def started_handler(model_dir: str | Path, gpu_id: int | None = None, model_yaml: dict | None = None):
    """A `BertTrtHandler` after `initialize`, and its context."""
    from handler.bert_trt_handler import BertTrtHandler

    context = worker_context(model_dir, gpu_id, model_yaml=model_yaml)
    handler = BertTrtHandler()
    handler.initialize(context)
    return handler, context


def handle_batch(handler, context, payloads: list) -> tuple[list, list[tuple[int, str | None]]]:
    """Send one TorchServe batch (one payload per request); returns responses (decoded from the JSON bytes
    the handler gives TorchServe) and (status, phrase) per request."""
    from ts.context import RequestProcessor

    context.request_processor = [RequestProcessor({}) for _ in payloads]
    raw = handler.handle([{"body": payload} for payload in payloads], context)
    responses = [json.loads(response) if isinstance(response, (bytes, bytearray)) else response for response in raw]
    statuses = [context.get_response_status(i) for i in range(len(payloads))]
    return responses, statuses
