"""Inside a network namespace of its own: TorchServe on a staged KServe-runtime config, probed from a "pod IP".

    unshare -rnpf --kill-child --mount-proc python -m tests.deploy.pod_network_probe --config C --model-store S --work W

Run by tests/deploy/test_torchserve_loopback.py, never directly on a shared network: the namespace has only
its loopback device, which gets the non-loopback address POD_IP (a stand-in for the pod's address), so nothing
here leaves the namespace and the config's fixed ports collide with nothing. TorchServe is started as KServe's
runtime starts it (`torchserve --start --model-store --ts-config`, the config unchanged); the probe makes the
calls KServe's wrapper makes (its readiness call to management_address, v1 predictions to the host:port of
inference_address, gRPC to that host on grpc_inference_port), connects to every configured port on POD_IP,
lists TorchServe's listening sockets (psutil), stops TorchServe and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import requests

from harness.torchserve import torchserve_bin
from ops.properties import read_properties

#: the stand-in pod address: a private-range address that exists only on this namespace's loopback device
POD_IP = "10.203.0.1"
MODEL = "bert_trt"
#: KServe's wrapper (pytorch/serve kubernetes/kserve/kserve_wrapper/TorchserveModel.py, v0.12.0): its readiness call
READINESS_URL_FORMAT = "{0}/models/{1}?customized={2}"


def host_port(address: str) -> tuple[str, int]:
    """(host, port) of a config address, "http://0.0.0.0:8085" or "0.0.0.0:7070"."""
    parts = urlsplit(address if "//" in address else f"//{address}")
    return parts.hostname, parts.port


def connects(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port is accepted."""
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def wrapper_ready(management_address: str) -> bool:
    """KServe's wrapper's readiness check: the model's description lists a READY worker."""
    try:
        response = requests.get(READINESS_URL_FORMAT.format(management_address, MODEL, "false"), timeout=5)
        return response.status_code == 200 and any(worker["status"] == "READY" for worker in response.json()[0]["workers"])
    except (requests.RequestException, ValueError, KeyError, IndexError):
        return False


def listening_sockets() -> list[list]:
    """[address, port] of every TCP socket TorchServe's processes listen on (Java's IPv4-mapped IPv6 addresses,
    ::ffff:127.0.0.1, written as IPv4)."""
    found = set()
    for process in psutil.process_iter(["name", "cmdline"]):
        if "org.pytorch.serve.ModelServer" not in " ".join(process.info["cmdline"] or []):
            continue
        for connection in process.connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN:
                found.add((connection.laddr.ip.removeprefix("::ffff:"), connection.laddr.port))
    return sorted([list(item) for item in found])


def probe(config: Path, model_store: Path, work: Path, timeout: float) -> dict:
    """Start TorchServe, make the wrapper's calls and the pod-IP connections, stop it; the findings."""
    props = read_properties(config)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{POD_IP}/32", "dev", "lo"], check=True)
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TEMP": str(work / "tmp"), "TMPDIR": str(work / "tmp"), "LOG_LOCATION": str(work / "logs"),
           "METRICS_LOCATION": str(work / "logs")}  # fmt: skip
    with (work / "torchserve_console.log").open("ab") as console:
        subprocess.run([torchserve_bin(), "--start", f"--model-store={model_store}", f"--ts-config={config}"], cwd=work, env=env,
                       check=True, stdout=console, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not wrapper_ready(props["management_address"]):
            if time.monotonic() > deadline:
                return {"error": f"no READY worker within {timeout:.0f} s (logs in {work / 'logs'})"}
            time.sleep(1)
        inference_host, inference_port = host_port(props["inference_address"])
        management_host, management_port = host_port(props["management_address"])
        metrics_port = host_port(props["metrics_address"])[1]
        grpc_ports = {"grpc_inference": int(props["grpc_inference_port"]), "grpc_management": int(props["grpc_management_port"])}
        body = {"instances": ["what a wonderful little hotel", {"text": "the package never arrived"}]}
        wrapper_predict = requests.post(f"http://{inference_host}:{inference_port}/v1/models/{MODEL}:predict", json=body, timeout=60)
        pod_predict = requests.post(f"http://{POD_IP}:{inference_port}/v1/models/{MODEL}:predict", json=body, timeout=60)
        return {
            "config": {"inference": [inference_host, inference_port], "management": [management_host, management_port], "metrics": metrics_port, **grpc_ports},
            "wrapper": {
                "ready": True,
                "predict_status": wrapper_predict.status_code,
                "predictions": len(wrapper_predict.json().get("predictions", [])) if wrapper_predict.ok else 0,
                # the wrapper's gRPC address: the host of inference_address on grpc_inference_port
                "grpc_connects": connects(inference_host, grpc_ports["grpc_inference"]),
            },
            "loopback": {"management_status": requests.get(f"http://127.0.0.1:{management_port}/models", timeout=10).status_code},
            "pod_ip": {
                "address": POD_IP,
                "predict_status": pod_predict.status_code,
                "predictions": len(pod_predict.json().get("predictions", [])) if pod_predict.ok else 0,
                "metrics_status": requests.get(f"http://{POD_IP}:{metrics_port}/metrics", timeout=10).status_code,
                "connects": {name: connects(POD_IP, port) for name, port in
                             {"inference": inference_port, "management": management_port, "metrics": metrics_port, **grpc_ports}.items()},  # fmt: skip
            },
            "listening": listening_sockets(),
        }
    finally:
        subprocess.run([torchserve_bin(), "--stop"], cwd=work, env=env, check=False, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--model-store", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()
    print(json.dumps(probe(args.config, args.model_store, args.work, args.timeout)))


if __name__ == "__main__":
    main()
