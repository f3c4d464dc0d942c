"""Our KServe server (`python -m kserve_server`) as a subprocess on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.process import wait_until_ready
from harness.torchserve import free_port


@dataclass(frozen=True)
class KServeServer:
    """Where a started KServe server answers."""

    model_name: str
    http_url: str
    #: host:port of the OIP gRPC door (None: started with --no-grpc)
    grpc_address: str | None
    log: Path
    #: the server's process (with --workers, the supervisor)
    pid: int


@contextmanager
def running_kserve(mar: Path, workdir: Path, model_name: str = "bert_trt", grpc: bool = True, extra: tuple[str, ...] = (), timeout: float = 180) -> Iterator[KServeServer]:
    """Start the KServe server on `mar`, wait until it is ready, yield where it answers, and always stop it."""
    workdir.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    grpc_port = free_port() if grpc else None
    log = workdir / f"kserve_{model_name}.log"
    command = [sys.executable, "-m", "kserve_server", "--mar", str(mar), "--model-name", model_name, "--http-port", str(http_port),
               "--unpack-dir", str(workdir / f"unpacked_{model_name}"), *(["--grpc-port", str(grpc_port)] if grpc else ["--no-grpc"]), *extra]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_until_ready(process, f"{url}/v2/models/{model_name}/ready", log, timeout=timeout)
        yield KServeServer(model_name, url, None if grpc_port is None else f"127.0.0.1:{grpc_port}", log, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
