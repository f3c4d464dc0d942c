"""The CPU image and the KServe image, built and run for real (marker `docker`; `.ci/run` runs it after `make test`).

docker/ensure_engine.sh installs and starts a Docker engine where it can; the tests skip, saying why,
only where no engine can run. The images are built on the local debootstrap base (no registry here). Both also
run the way the Kubernetes manifests run them (deploy/kserve/): read-only root filesystem, every capability
dropped, no new privileges, uid/gid 10001, writable only where a tmpfs stands in for the manifests' emptyDirs."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from harness.torchserve import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TAG = "bert-trt-serve:test"
KSERVE_TAG = "bert-trt-serve:kserve-test"
KEY_FILE = "/home/serve/run/key_file.json"
#: how deploy/kserve/ runs every container, as `docker run` options
HARDENED = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", "10001:10001"]
#: where the CPU image writes: key_file.json, logs/ and the renewer's log in its run folder; TorchServe's pid
#: file, Java's tmpdir and the unpacked archive in /tmp
CPU_IMAGE_WRITABLE = ["/tmp", "/home/serve/run"]


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image(tiny_model_store) -> str:
    """The CPU image built by docker/build.sh from the tests' archive, on the local debootstrap base."""
    return build(tiny_model_store, TAG)


@pytest.fixture(scope="module")
def kserve_image(tiny_model_store) -> str:
    """The KServe image (docker/build.sh --kserve) from the tests' archive, on the local debootstrap base."""
    return build(tiny_model_store, KSERVE_TAG, "--kserve")


def build(tiny_model_store, tag: str, *options: str) -> str:
    """docker/build.sh --local-base with the tests' archive; the image's tag."""
    engine = subprocess.run([str(REPO / "docker" / "ensure_engine.sh")], capture_output=True, text=True, timeout=600)
    if engine.returncode == 3:
        pytest.skip(f"no Docker engine can run here: {engine.stderr.strip()}")
    assert engine.returncode == 0, engine.stderr
    command = [str(REPO / "docker" / "build.sh"), "--local-base", *options, "--mar", str(tiny_model_store / "bert_trt.mar"), "--tag", tag]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return tag


def tmpfs_options(paths: list[str]) -> list[str]:
    """--tmpfs for each path, writable by uid 10001 and large enough for the unpacked archive (as an emptyDir is)."""
    return [option for path in paths for option in ("--tmpfs", f"{path}:rw,size=1g,uid=10001,gid=10001,mode=0700")]


def started_container(image: str, options: tuple[str, ...] = (), args: tuple[str, ...] = ()) -> tuple[str, str]:
    """Run the image (`docker run` `options`, the container's `args`) with its port 8080 published on loopback;
    wait until Docker reports it healthy."""
    port = free_port()
    name = f"bert_trt_test_{port}"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", *options, image, *args)
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


def test_the_key_renewer_runs_inside_the_container_and_renewed_keys_are_served(container):
    """The entrypoint's renewer is running, and a renewal inside the container (as the renewer makes it) replaces the
    inference key: the new key is answered, the old one refused."""
    name, url = container
    processes = docker("top", name).stdout
    assert "ops.keys renew" in processes, processes
    old = inference_key(name)
    renew = "PYTHONPATH=/opt/bert-trt-serve/tools python -m ops.keys renew-once --kinds inference --config /opt/bert-trt-serve/config.properties --key-dir /home/serve/run"
    renewed = docker("exec", name, "sh", "-c", renew, check=False)
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    new = inference_key(name)
    assert new != old
    def status(key: str) -> int:
        headers = {"Content-Type": "text/plain", "Authorization": f"Bearer {key}"}
        return requests.post(f"{url}/predictions/bert_trt", data=b"great value", headers=headers, timeout=60).status_code
    assert status(new) == 200 and status(old) == 400


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


def stopped(name: str) -> None:
    docker("rm", "-f", name, check=False)


def test_cpu_image_starts_hardened_and_answers(image, reference_classifier):
    """Read-only root, no capabilities, no new privileges, uid 10001, tmpfs only where it writes: healthy, and
    the prediction equals the reference."""
    name, url = started_container(image, (*HARDENED, *tmpfs_options(CPU_IMAGE_WRITABLE)))
    try:
        assert docker("exec", name, "id", "-u").stdout.strip() == "10001" and docker("exec", name, "id", "-g").stdout.strip() == "10001"
        assert docker("exec", name, "touch", "/opt/bert-trt-serve/x", check=False).returncode != 0, "the root filesystem must be read-only"
        text = "the staff were lovely and the room was spotless"
        headers = {"Content-Type": "text/plain", "Authorization": f"Bearer {inference_key(name)}"}
        answer = requests.post(f"{url}/predictions/bert_trt", data=text.encode(), headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] == reference_classifier.classify([text])[0]["label"]
    finally:
        stopped(name)


def custom_predictor() -> dict:
    """The predictor of deploy/kserve/custom-predictor.yaml's CPU InferenceService (bert-trt)."""
    (isvc,) = [doc for doc in yaml.safe_load_all((REPO / "deploy" / "kserve" / "custom-predictor.yaml").read_text()) if doc["metadata"]["name"] == "bert-trt"]
    return isvc["spec"]["predictor"]


def custom_predictor_writable_paths() -> list[str]:
    """The emptyDir mount paths of the CPU custom predictor."""
    predictor = custom_predictor()
    empty_dirs = {volume["name"] for volume in predictor["volumes"] if "emptyDir" in volume}
    return [mount["mountPath"] for mount in predictor["containers"][0]["volumeMounts"] if mount["name"] in empty_dirs]


def test_kserve_image_starts_as_the_custom_predictor_manifest_runs_it(kserve_image, reference_classifier):
    """The KServe image with the manifest's arguments, hardening and emptyDirs (as tmpfs): healthy, answers v1
    like the reference, exports the in-flight gauge, has no management API."""
    container = custom_predictor()["containers"][0]
    name, url = started_container(kserve_image, (*HARDENED, *tmpfs_options(custom_predictor_writable_paths())), tuple(container["args"]))
    try:
        assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
        texts = ["what a wonderful little hotel", "the package never arrived"]
        answer = requests.post(f"{url}/v1/models/bert_trt:predict", json={"instances": texts}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert [p["label"] for p in answer.json()["predictions"]] == [p["label"] for p in reference_classifier.classify(texts)]
        assert 'bert_trt_in_flight_requests{model="bert_trt"} 0.0' in requests.get(f"{url}/metrics", timeout=10).text
        assert requests.post(f"{url}/v2/repository/models/bert_trt/unload", timeout=10).status_code == 404
    finally:
        stopped(name)
