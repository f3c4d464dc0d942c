"""Both Dockerfiles pass hadolint (pinned in requirements.txt); the GPU one cannot be built here, so this is its check.
Runs in the README's test command (no Docker engine needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.kserve"])
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.is_file(), "hadolint is missing from the virtual environment: run `make setup`"
    result = subprocess.run([str(hadolint), "--no-color", str(DOCKER / dockerfile)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_entrypoint_and_build_script_parse():
    for script in ("gpu_entrypoint.sh", "entrypoint.sh"):
        assert subprocess.run(["sh", "-n", str(DOCKER / script)]).returncode == 0, script
    assert subprocess.run(["bash", "-n", str(DOCKER / "build.sh")]).returncode == 0
