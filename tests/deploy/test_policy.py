"""A maintained policy checker over what the cluster would run and the images: checkov 3.3.30 (pinned in
deploy/policy/requirements.txt, its own environment .venv-policy made by `make policy-env`, which `make test`
runs), offline (--skip-download, and with no network at all where a network namespace can be made).

Scanned: every InferenceService's predictor rendered as the Deployment KServe would make (tests/deploy/render.py),
deploy/kserve/'s other manifests beside them (checkov's NetworkPolicy check needs them), and every Dockerfile.
Passes only with 0 failed checks; the checks skipped are SKIPPED_CHECKS, each with its reason. A deliberately
weakened copy of one predictor is scanned in the same run and must fail, so a checker that checks nothing fails too."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.render import documents, inference_services, predictor_deployment

REPO = Path(__file__).resolve().parents[2]
CHECKOV = REPO / ".venv-policy" / "bin" / "checkov"
SKIPPED_CHECKS = {
    # "Image should use digest": the manifests name the tags docker/build.sh builds; a digest exists only once the
    # platform's pipeline has pushed the image to its registry, and is pinned there at deploy time (docs/kserve.md
    # "Build and push": kubectl set image ...@sha256:...). No registry here to take one from.
    "CKV_K8S_43": "image digests are pinned at deploy time, after the push (docs/kserve.md)",
    # "Ensure the base image uses a non latest version tag": checkov reads `FROM ${BASE}` literally; the tag is the
    # ARG BASE default on the line above, a pinned tag (test_every_dockerfile_base_defaults_to_a_pinned_tag)
    "CKV_DOCKER_7": "FROM ${BASE}: checkov does not resolve the ARG default, a pinned tag",
}
#: checks that must pass on every rendered predictor: the issue's least-privilege and isolation items
REQUIRED_PASSES = {
    "CKV_K8S_20": "allowPrivilegeEscalation false", "CKV_K8S_22": "read-only root filesystem", "CKV_K8S_23": "no root containers",
    "CKV_K8S_28": "no NET_RAW", "CKV_K8S_37": "capabilities dropped", "CKV_K8S_38": "no service account token",
    "CKV_K8S_40": "high uid", "CKV_K8S_31": "seccomp RuntimeDefault", "CKV2_K8S_6": "a NetworkPolicy selects the pod",
    "CKV_K8S_8": "liveness probe", "CKV_K8S_9": "readiness probe", "CKV_K8S_11": "CPU limits", "CKV_K8S_13": "memory limits",
}  # fmt: skip
WEAKENED = "weakened"


def without_network() -> list[str]:
    """`unshare` arguments that run a command with no network at all, where this machine allows it (else none)."""
    command = ["unshare", "--user", "--map-root-user", "--net"]
    if shutil.which("unshare") and subprocess.run([*command, "true"], capture_output=True, timeout=30).returncode == 0:
        return command
    return []


def weakened(deployment: dict) -> dict:
    """A copy of `deployment` running as root with privilege escalation allowed and the token mounted."""
    broken = copy.deepcopy(deployment)
    broken["metadata"]["name"] = WEAKENED
    pod = broken["spec"]["template"]["spec"]
    pod["automountServiceAccountToken"] = True
    pod["securityContext"] = {}
    pod["containers"][0]["securityContext"] = {"runAsUser": 0, "allowPrivilegeEscalation": True}
    return broken


def report_checks(report: dict, outcome: str) -> list[dict]:
    return report.get("results", {}).get(outcome, [])


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> dict:
    """checkov's JSON reports over the rendered predictors, the other manifests, the Dockerfiles and the weakened copy."""
    if not CHECKOV.is_file():
        pytest.fail(f"checkov is missing ({CHECKOV}): run `make policy-env` (make test does)")
    root = tmp_path_factory.mktemp("policy")
    (root / "k8s").mkdir()
    (root / "docker").mkdir()
    deployments = [predictor_deployment(isvc) for isvc in inference_services()]
    for i, deployment in enumerate(deployments):
        (root / "k8s" / f"{i}-{deployment['metadata']['name']}.yaml").write_text(yaml.safe_dump(deployment))
    (root / "k8s" / "namespace-policies-budgets.yaml").write_text(yaml.safe_dump_all([doc for _, doc in documents() if doc["kind"] != "InferenceService"]))
    (root / "k8s" / f"{WEAKENED}.yaml").write_text(yaml.safe_dump(weakened(deployments[0])))
    for dockerfile in sorted((REPO / "docker").glob("Dockerfile.*")):
        shutil.copy(dockerfile, root / "docker" / f"{dockerfile.name.removeprefix('Dockerfile.')}.Dockerfile")
    command = [*without_network(), str(CHECKOV), "--directory", str(root), "--framework", "kubernetes", "dockerfile", "--skip-download",
               "--skip-check", ",".join(SKIPPED_CHECKS), "--output", "json", "--soft-fail"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return {"reports": {report["check_type"]: report for report in reports}, "predictors": [d["metadata"]["name"] for d in deployments]}


def test_policy_checker_finds_no_failed_check(scan):
    failed = [(check["check_id"], check["check_name"], check["file_path"], check["resource"])
              for report in scan["reports"].values() for check in report_checks(report, "failed_checks")
              if WEAKENED not in check["file_path"]]  # fmt: skip
    assert failed == [], "checkov failed these (fix the manifest or Dockerfile; a skip needs its reason in SKIPPED_CHECKS):\n" + "\n".join(map(str, failed))
    assert set(scan["reports"]) == {"kubernetes", "dockerfile"}
    dockerfiles = {check["file_path"] for check in report_checks(scan["reports"]["dockerfile"], "passed_checks")}
    assert len(dockerfiles) == len(list((REPO / "docker").glob("Dockerfile.*"))), dockerfiles


def test_every_predictor_passes_the_least_privilege_and_isolation_checks(scan):
    passed = {(check["check_id"], check["resource"]) for check in report_checks(scan["reports"]["kubernetes"], "passed_checks")}
    for name in scan["predictors"]:
        deployment_passes = {check_id for check_id, resource in passed if resource.startswith(f"Deployment.bert-trt.{name}")}
        pod_passes = {check_id for check_id, resource in passed if resource.startswith(f"Pod.bert-trt.{name}")}
        missing = set(REQUIRED_PASSES) - deployment_passes - pod_passes
        assert not missing, f"{name}: checkov did not pass {[REQUIRED_PASSES[check] for check in sorted(missing)]}"


def test_the_checker_fails_a_weakened_predictor(scan):
    """Root, privilege escalation and a mounted token in a copy of the first predictor: checkov must say so."""
    failed = {check["check_id"] for check in report_checks(scan["reports"]["kubernetes"], "failed_checks") if WEAKENED in check["file_path"]}
    assert {"CKV_K8S_20", "CKV_K8S_23", "CKV_K8S_38", "CKV_K8S_40"} <= failed, failed


def test_every_dockerfile_base_defaults_to_a_pinned_tag():
    """What CKV_DOCKER_7 would check if it resolved `FROM ${BASE}`: the ARG default names a tag, not latest."""
    for dockerfile in sorted((REPO / "docker").glob("Dockerfile.*")):
        lines = dockerfile.read_text().splitlines()
        assert "FROM ${BASE}" in lines, dockerfile.name
        (base,) = [line.split("=", 1)[1] for line in lines if line.startswith("ARG BASE=")]
        image, _, tag = base.rpartition(":")
        assert image and tag and tag != "latest" and "/" not in tag, f"{dockerfile.name}: ARG BASE={base} must name a pinned tag"
