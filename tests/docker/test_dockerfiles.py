"""Every Dockerfile passes hadolint (pinned in requirements.txt) and runs as uid 10001; the GPU ones cannot be built
here, so this is their check (with the policy checker's, tests/deploy/test_policy.py).
Runs in the README's test command (no Docker engine needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"


DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.kserve", "Dockerfile.kserve-gpu"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.is_file(), "hadolint is missing from the virtual environment: run `make setup`"
    result = subprocess.run([str(hadolint), "--no-color", str(DOCKER / dockerfile)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_image_runs_as_uid_and_gid_10001(dockerfile):
    """The user the Kubernetes manifests name (runAsUser / runAsGroup 10001, deploy/kserve/) is the image's own:
    created with that uid and gid, and the last USER."""
    lines = (DOCKER / dockerfile).read_text().splitlines()
    assert any("groupadd --gid 10001 serve" in line and "useradd --create-home --uid 10001 --gid 10001 serve" in line for line in lines)
    assert [line for line in lines if line.startswith("USER ")][-1] == "USER 10001:10001"


def test_gpu_entrypoint_and_build_script_parse():
    for script in ("gpu_entrypoint.sh", "entrypoint.sh"):
        assert subprocess.run(["sh", "-n", str(DOCKER / script)]).returncode == 0, script
    assert subprocess.run(["bash", "-n", str(DOCKER / "build.sh")]).returncode == 0


def module_level_imports(paths) -> dict[str, set[str]]:
    """Top-level package -> the files that import it at module level (not inside a function: lazy imports)."""
    import ast

    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.parse(path.read_text()).body:
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("__future__", "handler", "kserve_server"):
                    found.setdefault(top, set()).add(str(path))
    return found


@pytest.mark.parametrize(
    "requirements, sources",
    [("docker/requirements-serve.txt", ["handler/*.py", "handler/backends/*.py"]), ("docker/requirements-gpu.txt", ["handler/*.py", "handler/backends/*.py"]),
     ("docker/requirements-kserve.txt", ["handler/*.py", "handler/backends/base.py", "handler/backends/onnxruntime.py", "kserve_server/*.py"]),
     ("docker/requirements-kserve-gpu.txt", ["handler/*.py", "handler/backends/*.py", "kserve_server/*.py"])],
)  # fmt: skip
def test_each_image_installs_every_package_its_code_imports_at_module_level(requirements, sources):
    from importlib.metadata import packages_distributions, requires

    repo = Path(__file__).resolve().parents[2]
    normal = lambda name: name.lower().replace("_", "-")  # noqa: E731
    pinned = {normal(line.split("==")[0]) for line in (repo / requirements).read_text().splitlines() if "==" in line and not line.startswith("#")}
    # a pinned package brings its own requirements into the image (kserve brings fastapi, prometheus_client, ...)
    brought = {normal(req.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].split("~")[0].split("!")[0].strip()) for name in pinned for req in (requires(name) or [])}
    distributions = packages_distributions()
    files = [path for pattern in sources for path in sorted(repo.glob(pattern))]
    missing = {
        top: sorted(users) for top, users in module_level_imports(files).items()
        if not {normal(dist) for dist in distributions.get(top, [])} & (pinned | brought)
    }  # fmt: skip
    assert not missing, f"{requirements} does not install what this code imports at module level: {missing}"
