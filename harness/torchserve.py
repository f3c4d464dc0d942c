"""Start, wait for, query and stop a real TorchServe: used by `make serve`, the tests and the benchmarks.

    python -m harness.torchserve start   # torchserve --start from the repo root, waits until bert_trt answers
    python -m harness.torchserve predict "I love this"
    python -m harness.torchserve stop    # torchserve --stop, waits until every process is gone

One controller, `TorchServe`, for both kinds of instance: an isolated one (own free loopback
ports, temp dir, pid file and logs under its work dir) so tests and benchmarks never collide
with a server a user already runs, and the repository's own (`TorchServe.repo_instance()`: the
shipped config.properties as is, fixed ports, started from the repo root). `start` also starts
the key renewer (`python -m ops.keys renew`) unless told not to; `stop` stops both (a TorchServe
started by hand gets no renewer: run `python -m ops.keys renew --config CONFIG --key-dir DIR` beside it). Every request
re-reads key_file.json and is retried once if its key was refused (renewed in between).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil
import requests

from handler.errors import BertTrtError, run_cli
from ops import health
from ops.keys import KEY_FILE, RENEWABLE_KINDS, is_key_refusal, read_key
from ops.properties import read_properties

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "config.properties"
DEFAULT_LOG_CONFIG = REPO / "ops" / "log4j2.xml"
PID_FILE = ".model_server.pid"
RENEWER_PID_FILE = "key_renewer.pid"
PORT_KEYS = {
    "inference_address": "http://127.0.0.1:{}",
    "management_address": "http://127.0.0.1:{}",
    "metrics_address": "http://127.0.0.1:{}",
    "grpc_inference_port": "{}",
    "grpc_management_port": "{}",
    "initial_worker_port": "{}",
}


class TorchServeError(BertTrtError):
    """TorchServe is not installed, did not start, or does not answer."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metric_values(log_dir: Path, name: str) -> list[float]:
    """Values of a custom handler metric from TorchServe's model_metrics.log."""
    path = Path(log_dir) / "model_metrics.log"
    if not path.is_file():
        return []
    pattern = re.compile(rf"\b{re.escape(name)}\.\w+:([0-9.]+)\|")
    return [float(m.group(1)) for m in pattern.finditer(path.read_text(errors="replace"))]


def torchserve_bin() -> str:
    """The `torchserve` launcher beside this Python, else the one on PATH."""
    local = Path(sys.executable).with_name("torchserve")
    found = str(local) if local.exists() else shutil.which("torchserve")
    if not found:
        raise TorchServeError("torchserve is not installed: run `make setup`")
    return found


@dataclass
class TorchServe:
    """One TorchServe instance started from `workdir` with the shipped config.

    isolated=True: free loopback ports, the config rewritten into `workdir` with them, and TMPDIR
    (where TorchServe keeps its pid file) and logs under `workdir`. isolated=False: the config as is.
    """

    workdir: Path
    #: None: the config's model_store
    model_store: Path | None = None
    #: "name=file.mar" entries to load at start; None: the config's load_models
    models: list[str] | None = field(default_factory=lambda: ["bert_trt=bert_trt.mar"])
    enable_model_api: bool = False
    config_template: Path = DEFAULT_CONFIG
    #: log4j2 configuration passed with --log-config (None: TorchServe's built-in one)
    log_config: Path | None = DEFAULT_LOG_CONFIG
    #: config.properties keys to replace (e.g. {"metrics_mode": "prometheus"})
    overrides: dict[str, str] = field(default_factory=dict)
    isolated: bool = True
    addresses: dict[str, str] = field(default_factory=dict)
    process_tree: list[psutil.Process] = field(default_factory=list)

    def __post_init__(self):
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.model_store is not None:  # TorchServe runs in workdir: a relative store would be looked up there
            self.model_store = Path(self.model_store).resolve()
        if self.isolated:
            self.addresses = {key: template.format(free_port()) for key, template in PORT_KEYS.items()}
        else:
            self.addresses = {key: value for key, value in read_properties(self.config_template).items() if key in PORT_KEYS}

    @classmethod
    def repo_instance(cls) -> "TorchServe":
        """The server `make serve` runs: started from the repository root with config.properties as is."""
        return cls(workdir=REPO, model_store=None, models=None, isolated=False)

    @property
    def inference_url(self) -> str:
        return self.addresses["inference_address"]

    @property
    def management_url(self) -> str:
        return self.addresses["management_address"]

    @property
    def metrics_url(self) -> str:
        return self.addresses["metrics_address"]

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def pid_file(self) -> Path:
        return (self.workdir / "tmp" if self.isolated else Path(tempfile.gettempdir())) / PID_FILE

    @property
    def model_names(self) -> list[str]:
        """Names of the models loaded at start."""
        entries = self.models if self.models is not None else read_properties(self.config_template).get("load_models", "").split(",")
        return [entry.split("=", 1)[0].strip() for entry in entries if entry.strip()]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.isolated:
            tmp = self.workdir / "tmp"
            tmp.mkdir(exist_ok=True)
            env.update(TMPDIR=str(tmp), TEMP=str(tmp), LOG_LOCATION=str(self.log_dir), METRICS_LOCATION=str(self.log_dir))
        return env

    def write_config(self) -> Path:
        """The config this instance starts with: for an isolated one, the template with its own ports."""
        if not self.isolated:
            return self.config_template
        lines = []
        for line in self.config_template.read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            if key in PORT_KEYS or key in ("model_store", "load_models") or key in self.overrides:
                continue
            lines.append(line)
        lines += [f"{key}={value}" for key, value in self.overrides.items()]
        lines += [f"{key}={value}" for key, value in self.addresses.items()]
        path = self.workdir / "config.properties"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 240, renew_keys: bool = True) -> "TorchServe":
        """`torchserve --start`, the key renewer (unless `renew_keys` is False), and wait until every model has a ready worker."""
        command = [torchserve_bin(), "--start", "--ncs", "--ts-config", str(self.write_config())]
        if self.model_store is not None:
            command += ["--model-store", str(self.model_store)]
        if self.models:
            command += ["--models", *self.models]
        if self.enable_model_api:
            command.append("--enable-model-api")
        if self.log_config is not None:
            command += ["--log-config", str(self.log_config)]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / "torchserve_console.log").open("ab") as console:  # the server outlives us: not our stdout
            subprocess.run(command, cwd=self.workdir, env=self.env(), check=True, stdout=console, stderr=subprocess.STDOUT)
        self.wait_ready(self.model_names, timeout)
        if renew_keys:  # after the key file exists
            self.start_key_renewer()
        self.process_tree = self.running_processes()
        return self

    @contextmanager
    def running(self, timeout: float = 240, renew_keys: bool = True) -> Iterator["TorchServe"]:
        """`start`, yield the server, and always stop it (killing whatever a stop leaves), even when the body fails."""
        try:
            yield self.start(timeout, renew_keys)
        finally:
            if self.stop():
                self.kill()

    def running_processes(self) -> list[psutil.Process]:
        """The frontend named in the pid file and its children (empty if none runs)."""
        try:
            parent = psutil.Process(int(self.pid_file.read_text()))
            return [parent, *parent.children(recursive=True)]
        except (OSError, ValueError, psutil.Error):
            return []

    def token(self, kind: str = "inference") -> str:
        """The current key of `kind` from key_file.json (waits 2 s for the file, which TorchServe writes at start)."""
        return read_key(self.workdir, kind, timeout=2)

    def headers(self, kind: str = "inference") -> dict[str, str]:
        """Authorization header with the current key of `kind` ("inference", "management" or "API")."""
        return {"Authorization": f"Bearer {self.token(kind)}"}

    def request(self, method: str, url: str, kind: str = "inference", headers: dict | None = None, **kwargs) -> requests.Response:
        """An HTTP request with the current key of `kind`; re-reads key_file.json and retries once if the key
        was refused (the renewer replaced it between our read and TorchServe's check)."""
        kwargs.setdefault("timeout", 60)
        for attempt in range(2):
            response = requests.request(method, url, headers={**(headers or {}), **self.headers(kind)}, **kwargs)
            if attempt or not is_key_refusal(response.status_code, response.text):
                return response
            time.sleep(0.2)
        return response

    def is_ready(self, model_names: list[str]) -> bool:
        """The inference and management ports answer, and each model has a READY worker (ops.health's probes)."""
        if not (self.workdir / KEY_FILE).is_file() or not health.live(self.inference_url).healthy:
            return False
        try:
            if self.request("GET", f"{self.management_url}/models", "management", timeout=5).status_code != 200:
                return False
        except (requests.ConnectionError, BertTrtError):
            return False
        return health.ready(self.management_url, self.workdir, model_names).healthy

    def start_key_renewer(self, kinds: tuple[str, ...] = RENEWABLE_KINDS) -> None:
        """Start `python -m ops.keys renew` for this instance, detached (it outlives this process; `stop` ends it)."""
        self.stop_key_renewer()
        command = [sys.executable, "-m", "ops.keys", "renew", "--config", str(self.write_config()), "--key-dir", str(self.workdir), "--kinds", *kinds]
        with (self.log_dir / "key_renewer.log").open("ab") as log:
            process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        (self.workdir / RENEWER_PID_FILE).write_text(str(process.pid))

    def stop_key_renewer(self) -> None:
        """Stop the key renewer started by `start_key_renewer`, if it runs."""
        pid_file = self.workdir / RENEWER_PID_FILE
        try:
            process = psutil.Process(int(pid_file.read_text()))
            if "ops.keys" in " ".join(process.cmdline()):
                process.send_signal(signal.SIGTERM)
                process.wait(10)
        except (OSError, ValueError, psutil.Error):
            pass
        pid_file.unlink(missing_ok=True)

    def wait_ready(self, model_names: list[str], timeout: float) -> None:
        """Wait until each model has a READY worker, or raise `TorchServeError` with the log tail."""
        deadline = time.time() + timeout
        while not self.is_ready(model_names):
            if time.time() > deadline:
                raise TorchServeError(f"TorchServe not ready after {timeout:.0f} s; {self.log_dir / 'model_log.log'} ends:\n{self.log_tail()}")
            time.sleep(0.5)

    def describe(self, model_name: str) -> dict:
        """The management API's description of one model (workers, batch settings)."""
        response = self.request("GET", f"{self.management_url}/models/{model_name}", "management", timeout=10)
        if response.status_code != 200:
            raise TorchServeError(f"describe {model_name}: {response.status_code} {response.text}")
        return response.json()[0]

    def ready_workers(self, model_name: str) -> int:
        return sum(worker["status"] == "READY" for worker in self.describe(model_name)["workers"])

    def predict(self, payload, model_name: str = "bert_trt", content_type: str | None = None, timeout: float = 60) -> requests.Response:
        """POST one prediction; str/bytes go as text/plain, anything else as JSON."""
        if isinstance(payload, (str, bytes)):
            headers = {"Content-Type": content_type or "text/plain; charset=utf-8"}
            data = payload.encode("utf-8") if isinstance(payload, str) else payload
        else:
            headers = {"Content-Type": content_type or "application/json"}
            data = json.dumps(payload).encode("utf-8")
        return self.request("POST", f"{self.inference_url}/predictions/{model_name}", "inference", headers, data=data, timeout=timeout)

    def log_tail(self, name: str = "model_log.log", lines: int = 40) -> str:
        path = self.log_dir / name
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else f"({path} missing)"

    def stop(self, timeout: float = 60) -> list[psutil.Process]:
        """`torchserve --stop` and the key renewer, then wait for the frontend and every worker to exit; returns survivors."""
        self.stop_key_renewer()
        processes = self.process_tree or self.running_processes()
        subprocess.run([torchserve_bin(), "--stop"], cwd=self.workdir, env=self.env(), check=False, stdout=subprocess.DEVNULL)
        _, alive = psutil.wait_procs(processes, timeout=timeout)
        return alive

    def kill(self) -> None:
        """Last resort for test teardown: kill whatever of the process tree is left."""
        for process in self.process_tree:
            try:
                process.kill()
            except psutil.Error:
                pass


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "predict", "stop"])
    parser.add_argument("text", nargs="?", default="I absolutely love this, it is wonderful!")
    parser.add_argument("--timeout", type=float, default=300)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    server = TorchServe.repo_instance()
    if args.command == "start":
        server.start(timeout=args.timeout)
        print(f"TorchServe is up: {server.inference_url}/predictions/bert_trt (logs in {server.log_dir})")
    elif args.command == "predict":
        try:
            response = server.predict(args.text)
        except requests.ConnectionError:
            raise TorchServeError(f"TorchServe does not answer at {server.inference_url}: start it with `make serve`") from None
        print(json.dumps(response.json(), indent=2))
        if not response.ok:
            sys.exit(1)
    elif args.command == "stop":
        alive = server.stop()
        if alive:
            raise TorchServeError(f"still running after stop: {[p.pid for p in alive]}")


if __name__ == "__main__":
    run_cli(main)
