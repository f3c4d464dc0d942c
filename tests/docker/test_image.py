"""The CPU image, built and run for real (marker `docker`; `.ci/run` runs it after `make test`).

docker/ensure_engine.sh installs and starts a Docker engine where it can; the tests skip, saying why,
only where no engine can run. The image is built on the local debootstrap base (no registry here)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests

from harness.torchserve import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TAG = "bert-trt-serve:test"
KEY_FILE = "/home/serve/run/key_file.json"


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image(tiny_model_store) -> str:
    """The CPU image built by docker/build.sh from the tests' archive, on the local debootstrap base."""
    engine = subprocess.run([str(REPO / "docker" / "ensure_engine.sh")], capture_output=True, text=True, timeout=600)
    if engine.returncode == 3:
        pytest.skip(f"no Docker engine can run here: {engine.stderr.strip()}")
    assert engine.returncode == 0, engine.stderr
    build = subprocess.run([str(REPO / "docker" / "build.sh"), "--local-base", "--mar", str(tiny_model_store / "bert_trt.mar"), "--tag", TAG],
                           cwd=REPO, capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    return TAG


def started_container(image: str) -> tuple[str, str]:
    """Run the image with its inference port published on loopback; wait until Docker reports it healthy."""
    port = free_port()
    name = f"bert_trt_test_{port}"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", image)
    deadline = time.monotonic() + 240
    while docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip() != "healthy":
        running = docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"
        if not running or time.monotonic() > deadline:
            logs = docker("logs", name, check=False)
            docker("rm", "-f", name, check=False)
            pytest.fail(f"container {'exited' if not running else 'not healthy within 240 s'}:\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}")
        time.sleep(2)
    return name, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def container(image):
    name, url = started_container(image)
    try:
        yield name, url
    finally:
        docker("rm", "-f", name, check=False)


def inference_key(name: str) -> str:
    return json.loads(docker("exec", name, "cat", KEY_FILE).stdout)["inference"]["key"]


def test_container_answers_like_the_in_process_reference_and_needs_a_token(container, reference_classifier):
    name, url = container
    text = "the staff were lovely and the room was spotless"
    headers = {"Content-Type": "text/plain", "Authorization": f"Bearer {inference_key(name)}"}
    answer = requests.post(f"{url}/predictions/bert_trt", data=text.encode(), headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    expected = reference_classifier.classify([text])[0]
    assert answer.json()["label"] == expected["label"] and abs(answer.json()["score"] - expected["score"]) <= 1e-4
    refused = requests.post(f"{url}/predictions/bert_trt", data=b"no token", headers={"Content-Type": "text/plain"}, timeout=30)
    assert refused.status_code == 400 and "InvalidKeyException" in refused.text


def test_container_runs_as_non_root_with_probes_inside(container):
    name, _ = container
    assert docker("exec", name, "id", "-u").stdout.strip() != "0"
    live = docker("exec", name, "sh", "-c", "PYTHONPATH=/opt/bert-trt-serve/tools python -m ops.health live --config /opt/bert-trt-serve/config.properties", check=False)
    assert live.returncode == 0, live.stdout + live.stderr


def test_image_size_is_reported(image, record_property):
    size = int(docker("image", "inspect", TAG, "--format", "{{.Size}}").stdout.strip())
    record_property("image_size_mib", round(size / 2**20))
    print(f"\nimage {TAG}: {size / 2**20:.0f} MiB")
    assert size > 0


def test_docker_stop_stops_torchserve_cleanly_and_quickly(image, record_property):
    name, _ = started_container(image)
    try:
        started = time.monotonic()
        docker("stop", "--time", "30", name, timeout=60)
        seconds = time.monotonic() - started
        record_property("docker_stop_s", round(seconds, 2))
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        assert seconds < 30, f"docker stop took {seconds:.1f} s (SIGKILL after 30 s would mean no clean stop)"
        logs = docker("logs", name)
        assert "TorchServe has stopped" in logs.stdout + logs.stderr
    finally:
        docker("rm", "-f", name, check=False)
