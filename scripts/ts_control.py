"""Start, wait for, query and stop a real TorchServe: used by `make serve`, the tests and the benchmarks.

    python scripts/ts_control.py start   # torchserve --start from the repo root, waits until bert_trt answers
    python scripts/ts_control.py predict "I love this"
    python scripts/ts_control.py stop    # torchserve --stop, waits until every process is gone

`TorchServe` below runs an isolated instance (own ports, temp dir, pid file, logs) so
tests and benchmarks never collide with a server a user already runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "config.properties"
PORT_KEYS = {
    "inference_address": "http://127.0.0.1:{}",
    "management_address": "http://127.0.0.1:{}",
    "metrics_address": "http://127.0.0.1:{}",
    "grpc_inference_port": "{}",
    "grpc_management_port": "{}",
    "initial_worker_port": "{}",
}


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_properties(path: Path) -> dict[str, str]:
    """key=value lines of a Java properties file (comments and blanks skipped)."""
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def inference_key(workdir: Path, kind: str = "inference") -> str:
    """The token TorchServe wrote to key_file.json ("inference", "management" or "API")."""
    path = Path(workdir) / "key_file.json"
    deadline = time.time() + 30
    while True:
        try:
            return json.loads(path.read_text())[kind]["key"]
        except (OSError, ValueError, KeyError):  # not there yet, or half written
            if time.time() > deadline:
                raise RuntimeError(f"no usable {path}: is token authorization disabled, or TorchServe not started here?") from None
            time.sleep(0.2)


def bearer(key_dir: Path, kind: str = "inference") -> dict[str, str]:
    """Authorization header with the token of `kind` from key_dir/key_file.json."""
    return {"Authorization": f"Bearer {inference_key(key_dir, kind)}"}


def describe_model(management_url: str, key_dir: Path, model_name: str) -> dict:
    """The management API's description of one model (workers, batch settings)."""
    response = requests.get(f"{management_url}/models/{model_name}", headers=bearer(key_dir, "management"), timeout=10)
    if response.status_code != 200:
        raise RuntimeError(f"describe {model_name}: {response.status_code} {response.text}")
    return response.json()[0]


def wait_until_ready(inference_url: str, management_url: str, key_dir: Path, model_names: list[str], timeout: float) -> bool:
    """Poll /ping and the management API until each model has a READY worker; False after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            pinged = requests.get(f"{inference_url}/ping", headers=bearer(key_dir), timeout=5).ok
            if pinged and all(
                any(w["status"] == "READY" for w in describe_model(management_url, key_dir, name)["workers"]) for name in model_names
            ):
                return True
        except (requests.ConnectionError, RuntimeError):
            pass
        time.sleep(0.5)
    return False


@dataclass
class TorchServe:
    """One TorchServe instance in its own folder, on free loopback ports, from the shipped config."""

    workdir: Path
    model_store: Path
    models: list[str] = field(default_factory=lambda: ["bert_trt=bert_trt.mar"])
    enable_model_api: bool = False
    config_template: Path = DEFAULT_CONFIG
    #: config.properties keys to replace (e.g. {"metrics_mode": "prometheus"})
    overrides: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    process_tree: list[psutil.Process] = field(default_factory=list)

    def __post_init__(self):
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = {key: free_port() for key in PORT_KEYS}

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference_address']}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['management_address']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics_address']}"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        tmp = str(self.workdir / "tmp")
        Path(tmp).mkdir(exist_ok=True)
        env.update(TMPDIR=tmp, TEMP=tmp, LOG_LOCATION=str(self.log_dir), METRICS_LOCATION=str(self.log_dir))
        return env

    def write_config(self) -> Path:
        """The shipped config.properties with this instance's ports and model store."""
        lines = []
        for line in self.config_template.read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            if key in PORT_KEYS or key in ("model_store", "load_models") or key in self.overrides:
                continue
            lines.append(line)
        lines += [f"{key}={value}" for key, value in self.overrides.items()]
        lines += [f"{key}={template.format(self.ports[key])}" for key, template in PORT_KEYS.items()]
        lines.append(f"model_store={self.model_store}")
        path = self.workdir / "config.properties"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 240) -> "TorchServe":
        """`torchserve --start` and wait until every model has a ready worker."""
        command = [_torchserve_bin(), "--start", "--ncs", "--ts-config", str(self.write_config()), "--model-store", str(self.model_store)]
        if self.models:
            command += ["--models", *self.models]
        if self.enable_model_api:
            command.append("--enable-model-api")
        with (self.workdir / "torchserve_console.log").open("ab") as console:
            subprocess.run(command, cwd=self.workdir, env=self.env(), check=True, stdout=console, stderr=subprocess.STDOUT)
        self.wait_ready([m.split("=", 1)[0] for m in self.models], timeout)
        pid = int((self.workdir / "tmp" / ".model_server.pid").read_text())
        parent = psutil.Process(pid)
        self.process_tree = [parent, *parent.children(recursive=True)]
        return self

    def token(self, kind: str = "inference") -> str:
        return inference_key(self.workdir, kind)

    def headers(self, kind: str = "inference") -> dict[str, str]:
        return bearer(self.workdir, kind)

    def wait_ready(self, model_names: list[str], timeout: float) -> None:
        """Wait until each model has a READY worker, or fail with the log tail."""
        if not wait_until_ready(self.inference_url, self.management_url, self.workdir, model_names, timeout):
            raise TimeoutError(f"TorchServe not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}")

    def describe(self, model_name: str) -> dict:
        return describe_model(self.management_url, self.workdir, model_name)

    def ready_workers(self, model_name: str) -> int:
        return sum(worker["status"] == "READY" for worker in self.describe(model_name)["workers"])

    def predict(self, payload, model_name: str = "bert_trt", content_type: str | None = None, timeout: float = 60) -> requests.Response:
        """POST one prediction; str/bytes go as text/plain, anything else as JSON."""
        headers = self.headers()
        if isinstance(payload, (str, bytes)):
            headers["Content-Type"] = content_type or "text/plain; charset=utf-8"
            data = payload.encode("utf-8") if isinstance(payload, str) else payload
        else:
            headers["Content-Type"] = content_type or "application/json"
            data = json.dumps(payload).encode("utf-8")
        return requests.post(f"{self.inference_url}/predictions/{model_name}", data=data, headers=headers, timeout=timeout)

    def log_tail(self, name: str = "model_log.log", lines: int = 40) -> str:
        path = self.log_dir / name
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else f"({path} missing)"

    def stop(self, timeout: float = 60) -> list[psutil.Process]:
        """`torchserve --stop`, then wait for the frontend and every worker to exit; returns survivors."""
        subprocess.run([_torchserve_bin(), "--stop"], cwd=self.workdir, env=self.env(), check=False, stdout=subprocess.DEVNULL)
        _, alive = psutil.wait_procs(self.process_tree, timeout=timeout)
        return alive

    def kill(self) -> None:
        """Last resort for test teardown: kill whatever of the process tree is left."""
        for process in self.process_tree:
            try:
                process.kill()
            except psutil.Error:
                pass


def _torchserve_bin() -> str:
    local = Path(sys.executable).with_name("torchserve")
    found = str(local) if local.exists() else shutil.which("torchserve")
    if not found:
        raise RuntimeError("torchserve is not installed: run `make setup`")
    return found


def metric_values(log_dir: Path, name: str) -> list[float]:
    """Values of a custom handler metric from TorchServe's model_metrics.log."""
    path = Path(log_dir) / "model_metrics.log"
    if not path.is_file():
        return []
    pattern = re.compile(rf"\b{re.escape(name)}\.\w+:([0-9.]+)\|")
    return [float(m.group(1)) for m in pattern.finditer(path.read_text(errors="replace"))]


def _repo_instance_command(args: argparse.Namespace) -> None:
    """CLI for the server started from the repo root with the shipped config (fixed ports)."""
    props = read_properties(DEFAULT_CONFIG)
    inference = props["inference_address"]
    if args.command == "start":
        (REPO / "logs").mkdir(exist_ok=True)
        console_log = REPO / "logs" / "torchserve_console.log"
        with console_log.open("ab") as console:  # the server keeps running: don't tie it to our stdout
            subprocess.run([_torchserve_bin(), "--start", "--ncs", "--ts-config", str(DEFAULT_CONFIG)], cwd=REPO, check=True, stdout=console, stderr=subprocess.STDOUT)
        if not wait_until_ready(inference, props["management_address"], REPO, ["bert_trt"], args.timeout):
            sys.exit(f"TorchServe did not get ready in {args.timeout} s; see {REPO / 'logs' / 'model_log.log'}")
        print(f"TorchServe is up: {inference}/predictions/bert_trt (logs in {REPO / 'logs'})")
    elif args.command == "predict":
        try:
            response = requests.post(
                f"{inference}/predictions/bert_trt",
                data=args.text.encode("utf-8"),
                headers={**bearer(REPO), "Content-Type": "text/plain; charset=utf-8"},
                timeout=60,
            )
        except (requests.ConnectionError, RuntimeError) as error:
            sys.exit(f"TorchServe does not answer at {inference} ({type(error).__name__}): start it with `make serve`")
        print(json.dumps(response.json(), indent=2))
        if not response.ok:
            sys.exit(1)
    elif args.command == "stop":
        pid_file = Path(tempfile.gettempdir()) / ".model_server.pid"
        processes = []
        if pid_file.is_file():
            try:
                parent = psutil.Process(int(pid_file.read_text()))
                processes = [parent, *parent.children(recursive=True)]
            except psutil.Error:
                pass
        subprocess.run([_torchserve_bin(), "--stop"], cwd=REPO, check=False)
        _, alive = psutil.wait_procs(processes, timeout=60)
        if alive:
            sys.exit(f"still running after stop: {[p.pid for p in alive]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "predict", "stop"])
    parser.add_argument("text", nargs="?", default="I absolutely love this, it is wonderful!")
    parser.add_argument("--timeout", type=float, default=300)
    _repo_instance_command(parser.parse_args())


if __name__ == "__main__":
    main()
