"""The GPU container's first-start step (export/engine_cache.py, docker/gpu_entrypoint.sh), for each case:
engine present / stale / absent, a failing build, GPU without TensorRT, no GPU.

The Python tests inject the platform and the builder; the entrypoint tests run the real shell script
outside Docker with a fake `nvidia-smi` and a fake `tensorrt` package (a version string, no builder)
on the path, and a recorder in place of entrypoint.sh. No real TensorRT runs here."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import build_mar
from export.engine_cache import DIGEST_LENGTH, GpuPlatform, Outcome, prepare_archive
from export.mar import build_mar as build_archive
from export.trt_engine import sha256_of
from handler import layout

REPO = Path(__file__).resolve().parents[2]
H100 = GpuPlatform("10.13.3.9", (9, 0), "NVIDIA H100 80GB HBM3")


@pytest.fixture(scope="module")
def gpu_mar(tiny_checkpoint, tiny_export, tmp_path_factory) -> Path:
    """The tiny model's archive as a GPU image ships it: fp32 model.onnx inside, no engine."""
    store = tmp_path_factory.mktemp("gpu_store")
    args = ["--checkpoint", str(tiny_checkpoint), "--export-dir", str(tiny_export), "--out", str(store), "--no-onnx-int8"]
    return build_archive(build_mar.parse_args(args))


class RecordingBuilder:
    """Writes a pretend engine and the sidecar export.trt_engine would write for `platform`."""

    def __init__(self, platform: GpuPlatform = H100, fail: bool = False):
        self.platform, self.fail, self.calls = platform, fail, 0

    def __call__(self, onnx: Path, engine: Path) -> None:
        self.calls += 1
        if self.fail:
            raise RuntimeError("out of memory while building")
        engine.write_bytes(b"engine for " + self.platform.gpu_name.encode())
        write_sidecar(engine, self.platform, sha256_of(onnx))


def write_sidecar(engine: Path, platform: GpuPlatform, onnx_sha256: str) -> None:
    sidecar = {"tensorrt_version": platform.tensorrt_version, "compute_capability": "{}.{}".format(*platform.compute_capability),
               "gpu_name": platform.gpu_name, "onnx_sha256": onnx_sha256}  # fmt: skip
    layout.sidecar_path(engine).write_text(json.dumps(sidecar))


def onnx_sha(mar: Path) -> str:
    with zipfile.ZipFile(mar) as archive:
        return hashlib.sha256(archive.read(layout.ONNX_FILE)).hexdigest()


def cached_engine(cache: Path, mar: Path) -> Path:
    return cache / onnx_sha(mar)[:DIGEST_LENGTH] / layout.ENGINE_FILE


def archive_names(mar: Path) -> set[str]:
    return set(zipfile.ZipFile(mar).namelist())


def test_absent_engine_is_built_cached_and_packed(gpu_mar, tmp_path):
    builder = RecordingBuilder()
    result = prepare_archive(gpu_mar, tmp_path / "cache", tmp_path / "store", H100, "", builder)
    assert result.outcome is Outcome.BUILT and builder.calls == 1
    assert result.engine == cached_engine(tmp_path / "cache", gpu_mar) and result.engine.is_file()
    served = tmp_path / "store" / gpu_mar.name
    assert {layout.ENGINE_FILE, layout.ENGINE_SIDECAR_FILE} <= archive_names(served)
    assert archive_names(served) - {layout.ENGINE_FILE, layout.ENGINE_SIDECAR_FILE} == archive_names(gpu_mar)


def test_present_engine_is_used_without_building(gpu_mar, tmp_path):
    prepare_archive(gpu_mar, tmp_path / "cache", tmp_path / "first", H100, "", RecordingBuilder())
    builder = RecordingBuilder()
    result = prepare_archive(gpu_mar, tmp_path / "cache", tmp_path / "second", H100, "", builder)
    assert result.outcome is Outcome.FRESH and builder.calls == 0
    assert layout.ENGINE_FILE in archive_names(tmp_path / "second" / gpu_mar.name)


@pytest.mark.parametrize(
    "built_on, onnx_sha256",
    [(GpuPlatform("10.7.0", (9, 0), "NVIDIA H100 80GB HBM3"), None), (GpuPlatform("10.13.3.9", (8, 0), "NVIDIA A100"), None), (H100, "0" * 64)],
    ids=["other TensorRT", "other GPU", "other ONNX"],
)
def test_stale_engine_is_rebuilt(gpu_mar, tmp_path, built_on, onnx_sha256):
    engine = cached_engine(tmp_path / "cache", gpu_mar)
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"old engine")
    write_sidecar(engine, built_on, onnx_sha256 or onnx_sha(gpu_mar))
    builder = RecordingBuilder()
    result = prepare_archive(gpu_mar, tmp_path / "cache", tmp_path / "store", H100, "", builder)
    assert result.outcome is Outcome.REBUILT and builder.calls == 1
    assert engine.read_bytes() == b"engine for NVIDIA H100 80GB HBM3"


def test_a_failed_build_serves_the_archive_as_built(gpu_mar, tmp_path):
    result = prepare_archive(gpu_mar, tmp_path / "cache", tmp_path / "store", H100, "", RecordingBuilder(fail=True))
    assert result.outcome is Outcome.SKIPPED and "RuntimeError: out of memory" in result.reason
    assert (tmp_path / "store" / gpu_mar.name).read_bytes() == gpu_mar.read_bytes()
    assert not cached_engine(tmp_path / "cache", gpu_mar).exists()  # no half-written engine stays in the cache


def test_no_gpu_or_no_onnx_serves_the_archive_as_built(gpu_mar, tiny_model_store, tmp_path):
    result = prepare_archive(gpu_mar, tmp_path / "cache", tmp_path / "store", None, "no GPU: nvidia-smi is not on PATH", RecordingBuilder())
    assert result.outcome is Outcome.SKIPPED and result.reason.startswith("no GPU")
    assert (tmp_path / "store" / gpu_mar.name).read_bytes() == gpu_mar.read_bytes()
    cpu_mar = tiny_model_store / "bert_trt.mar"  # the CPU archive packs only model.int8.onnx
    result = prepare_archive(cpu_mar, tmp_path / "cache", tmp_path / "cpu_store", H100, "", RecordingBuilder())
    assert result.outcome is Outcome.SKIPPED and "--no-onnx-int8" in result.reason


# --- docker/gpu_entrypoint.sh itself, outside Docker -------------------------------------------------

FAKE_NVIDIA_SMI = {
    "gpu": "#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 9.0'\n",
    "broken": "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'\nexit 9\n",
}
RECORDER = '#!/bin/sh\necho "MODEL_STORE=$MODEL_STORE" > "$HOME/next_entrypoint.txt"\n'


def run_gpu_entrypoint(gpu_mar: Path, tmp_path: Path, nvidia_smi: str, tensorrt_version: str | None, cache: Path | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    """docker/gpu_entrypoint.sh with the image's layout under tmp_path; returns the run and the model store it serves."""
    app = tmp_path / "app"
    (app / "model_store").mkdir(parents=True)
    (app / "model_store" / "bert_trt.mar").write_bytes(gpu_mar.read_bytes())
    (app / "tools").mkdir()
    for package in ("handler", "export", "ops"):
        (app / "tools" / package).symlink_to(REPO / package)
    (app / "entrypoint.sh").write_text(RECORDER)
    (app / "entrypoint.sh").chmod(0o755)
    fakes = tmp_path / "fakes"
    (fakes / "bin").mkdir(parents=True)
    (fakes / "bin" / "nvidia-smi").write_text(FAKE_NVIDIA_SMI[nvidia_smi])
    (fakes / "bin" / "nvidia-smi").chmod(0o755)
    if tensorrt_version:
        (fakes / "site" / "tensorrt").mkdir(parents=True)
        (fakes / "site" / "tensorrt" / "__init__.py").write_text(f"__version__ = {tensorrt_version!r}\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "BERT_TRT_APP": str(app), "BERT_TRT_ENGINE_CACHE": str(cache or tmp_path / "engines"), "HF_HUB_OFFLINE": "1",
           "PATH": f"{fakes / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin",
           "PYTHONPATH": str(fakes / "site")}  # fmt: skip
    result = subprocess.run(["sh", str(REPO / "docker" / "gpu_entrypoint.sh")], env=env, capture_output=True, text=True, timeout=300)
    return result, home / "run" / "model_store"


def test_entrypoint_without_a_gpu_serves_the_archive_as_built(gpu_mar, tmp_path):
    result, store = run_gpu_entrypoint(gpu_mar, tmp_path, "broken", tensorrt_version=None)
    assert result.returncode == 0, result.stderr
    assert "no engine: no GPU: nvidia-smi answered 9" in result.stdout
    assert (store / "bert_trt.mar").read_bytes() == gpu_mar.read_bytes()
    assert (tmp_path / "home" / "next_entrypoint.txt").read_text().strip() == f"MODEL_STORE={store}"


def test_entrypoint_on_a_gpu_without_tensorrt_serves_torch_cuda(gpu_mar, tmp_path):
    result, store = run_gpu_entrypoint(gpu_mar, tmp_path, "gpu", tensorrt_version=None)
    assert result.returncode == 0, result.stderr
    assert "no engine: no TensorRT in this image" in result.stdout and "serving torch_cuda" in result.stdout
    assert layout.ENGINE_FILE not in archive_names(store / "bert_trt.mar")


def test_entrypoint_packs_a_present_engine_and_survives_a_failed_rebuild(gpu_mar, tmp_path):
    engine = cached_engine(tmp_path / "engines", gpu_mar)
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"engine built earlier on this GPU")
    write_sidecar(engine, H100, onnx_sha(gpu_mar))
    result, store = run_gpu_entrypoint(gpu_mar, tmp_path / "present", "gpu", H100.tensorrt_version, cache=tmp_path / "engines")
    assert result.returncode == 0, result.stderr
    assert "cached engine used" in result.stdout
    assert zipfile.ZipFile(store / "bert_trt.mar").read(layout.ENGINE_FILE) == b"engine built earlier on this GPU"

    # the image now has another TensorRT: the engine is stale; the fake tensorrt cannot build, and the model is still served
    result, store = run_gpu_entrypoint(gpu_mar, tmp_path / "upgraded", "gpu", "10.14.1", cache=tmp_path / "engines")
    assert result.returncode == 0, result.stderr
    assert "cached engine is stale (engine was built with TensorRT 10.13.3.9" in result.stdout
    assert "no engine: engine build failed" in result.stdout
    assert layout.ENGINE_FILE not in archive_names(store / "bert_trt.mar")
