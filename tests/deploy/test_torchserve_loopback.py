"""KServe's TorchServe runtime with the shipped deploy/kserve/torchserve-config.properties: management answers on
the container's loopback only, inference and metrics on the pod's address, and KServe's wrapper's calls work.

No pod network here: TorchServe runs in a user + network + PID namespace of its own (`unshare`), whose loopback
device also carries a private address standing in for the pod IP (tests/deploy/pod_network_probe.py). A socket
bound to 127.0.0.1 does not accept connections to any other address of its host, whatever the interface, so a
refused connection to that address is what another pod would get. The config's fixed ports collide with nothing
in the namespace, and everything in it is killed when the probe exits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export.kserve_storage import stage

REPO = Path(__file__).resolve().parents[2]
UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]


def namespaces_unavailable() -> str | None:
    """Why this machine cannot make the namespaces (None: it can)."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs `unshare` (util-linux) and `ip` (iproute2): apt-get install util-linux iproute2"
    check = subprocess.run([*UNSHARE, "ip", "link", "set", "lo", "up"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        return f"cannot create user + network namespaces here ({check.stderr.strip()}): allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) or run as root"
    return None


@pytest.fixture(scope="module")
def findings(tiny_model_store, tmp_path_factory) -> dict:
    """What the probe saw: TorchServe started as KServe's runtime starts it, on the staged config and model store."""
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("pod_network")
    config = stage(tiny_model_store / "bert_trt.mar", work / "storage")
    command = [*UNSHARE, sys.executable, "-m", "tests.deploy.pod_network_probe", "--config", str(config),
               "--model-store", str(work / "storage" / "model-store"), "--work", str(work / "run")]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert "error" not in found, found["error"]
    return found


@pytest.mark.integration
def test_management_is_bound_to_loopback_on_its_own_port(findings):
    config = findings["config"]
    assert config["management"] == ["127.0.0.1", 8081] and config["management"][1] != config["inference"][1]
    listening = {tuple(item) for item in findings["listening"]}
    wildcard = {("0.0.0.0", config["inference"][1]), ("::", config["inference"][1])}
    assert ("127.0.0.1", 8081) in listening and listening & wildcard, listening
    loopback_only = {port for ip, port in listening if ip == "127.0.0.1"}
    assert {8081, config["grpc_management"], config["grpc_inference"]} <= loopback_only
    # nothing but inference and metrics listens beyond loopback (Java listens dual-stack: "::" is every address)
    assert {port for ip, port in listening if not ip.startswith("127.") and ip != "::1"} == {config["inference"][1], config["metrics"]}


@pytest.mark.integration
def test_from_the_pod_address_management_is_refused_and_inference_answers(findings):
    pod = findings["pod_ip"]
    assert pod["connects"] == {"inference": True, "management": False, "metrics": True, "grpc_inference": False, "grpc_management": False}
    assert pod["predict_status"] == 200 and pod["predictions"] == 2
    assert pod["metrics_status"] == 200
    assert findings["loopback"]["management_status"] == 200


@pytest.mark.integration
def test_kserve_wrapper_calls_still_work_inside_the_container(findings):
    """The calls pytorch/serve's kserve_wrapper (v0.12.0) makes: readiness on management_address, v1 predictions
    and gRPC to the host of inference_address (0.0.0.0: this container)."""
    wrapper = findings["wrapper"]
    assert wrapper["ready"] and wrapper["predict_status"] == 200 and wrapper["predictions"] == 2
    assert wrapper["grpc_connects"]
