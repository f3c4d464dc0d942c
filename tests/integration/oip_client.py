"""Run tritonclient's gRPC client in a subprocess (triton_grpc_client.py): tritonclient and KServe compile the
same `inference.*` protobuf messages, so one process cannot import both."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def triton_grpc(**request) -> dict:
    """One call through tritonclient's gRPC client (see triton_grpc_client.py for the request and reply)."""
    script = Path(__file__).with_name("triton_grpc_client.py")
    done = subprocess.run([sys.executable, str(script)], input=json.dumps(request), capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)
