"""First start of the GPU container: a TensorRT engine for *this* GPU and TensorRT, cached in a volume.

    python -m export.engine_cache --mar /opt/bert-trt-serve/model_store/bert_trt.mar --cache /engines --out ~/run/model_store

An engine only runs on the TensorRT version and GPU model (compute capability) it was built with, so
it cannot ship inside an image meant for several GPU types. This step, run by docker/gpu_entrypoint.sh
before TorchServe starts, looks in the cache for an engine of the archive's ``model.onnx``
(``<cache>/<sha256 of model.onnx, 16 hex>/model.plan`` + sidecar) and then:

- present and built here (same TensorRT, same compute capability, same ONNX): used as is;
- present but stale (another TensorRT, another GPU, another ONNX): rebuilt in place;
- absent: built;
- no GPU, no TensorRT, no model.onnx in the archive, or the build fails: no engine, with the reason
  printed; the archive is served as it is (torch_cuda on a GPU, the CPU backends without one).

It writes ``<out>/<archive name>``: the archive plus the engine (model.plan and its sidecar added to
the zip) or an unchanged copy. Exit status 0 in every case above: serving must not depend on it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable

from export.trt_engine import sha256_of
from handler import layout
from handler.errors import EngineBuildError, run_cli

#: hex digits of the ONNX's sha256 that name its cache folder
DIGEST_LENGTH = 16


@dataclass(frozen=True)
class GpuPlatform:
    """What an engine is tied to: the TensorRT version and the GPU's compute capability."""

    tensorrt_version: str
    compute_capability: tuple[int, int]
    gpu_name: str


class Outcome(Enum):
    FRESH = "cached engine used"
    BUILT = "engine built"
    REBUILT = "stale engine rebuilt"
    SKIPPED = "no engine"


@dataclass(frozen=True)
class EngineResult:
    outcome: Outcome
    reason: str
    engine: Path | None = None


#: builds `engine` (and its sidecar) from `onnx` on this GPU
EngineBuilder = Callable[[Path, Path], None]


def detect_platform() -> tuple[GpuPlatform | None, str]:
    """The GPU and TensorRT of this machine, or None and why not. Asks ``nvidia-smi`` (no CUDA
    context is created) for GPU 0 and imports `tensorrt` for its version."""
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return None, "no GPU: nvidia-smi is not on PATH (run the container with --gpus)"
    query = subprocess.run([nvidia_smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True, text=True, timeout=60)
    lines = [line for line in query.stdout.splitlines() if line.strip()]
    if query.returncode != 0 or not lines:
        return None, f"no GPU: nvidia-smi answered {query.returncode}: {(query.stderr or query.stdout).strip()[:200]}"
    name, capability = (part.strip() for part in lines[0].rsplit(",", 1))
    major, minor = (int(part) for part in capability.split("."))
    try:
        import tensorrt
    except ImportError as error:
        return None, f"no TensorRT in this image ({error}): serving torch_cuda"
    return GpuPlatform(tensorrt.__version__, (major, minor), name), ""


def staleness(sidecar: dict, platform: GpuPlatform, onnx_sha256: str) -> str | None:
    """Why a cached engine described by `sidecar` cannot serve here, or None if it can."""
    from handler.backends.tensorrt import engine_mismatch

    reason = engine_mismatch(sidecar, platform.tensorrt_version, platform.compute_capability)
    if reason:
        return reason
    if sidecar.get("onnx_sha256") != onnx_sha256:
        return "engine was built from another model.onnx"
    return None


def ensure_engine(onnx: Path, cache: Path, platform: GpuPlatform | None, build: EngineBuilder, skip_reason: str = "") -> EngineResult:
    """The cached engine of `onnx` for `platform`, built or rebuilt with `build` when absent or stale."""
    if platform is None:
        return EngineResult(Outcome.SKIPPED, skip_reason or "no GPU platform")
    digest = sha256_of(onnx)
    engine = cache / digest[:DIGEST_LENGTH] / layout.ENGINE_FILE
    sidecar = layout.sidecar_path(engine)
    outcome = Outcome.BUILT
    if engine.is_file() and sidecar.is_file():
        reason = staleness(json.loads(sidecar.read_text()), platform, digest)
        if reason is None:
            return EngineResult(Outcome.FRESH, f"{engine} matches TensorRT {platform.tensorrt_version} on {platform.gpu_name}", engine)
        outcome = Outcome.REBUILT
        print(f"cached engine is stale ({reason}): rebuilding", flush=True)
    engine.parent.mkdir(parents=True, exist_ok=True)
    try:
        build(onnx, engine)
    except Exception as error:  # whatever breaks the build, the model is still served without the engine
        engine.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
        return EngineResult(Outcome.SKIPPED, f"engine build failed: {type(error).__name__}: {error}")
    return EngineResult(outcome, f"{engine} for TensorRT {platform.tensorrt_version} on {platform.gpu_name}", engine)


def add_engine_to_mar(mar: Path, engine: Path, out: Path) -> None:
    """Copy `mar` to `out` with the engine and its sidecar added at the archive's top level."""
    shutil.copyfile(mar, out)
    with zipfile.ZipFile(out, "a") as archive:
        names = set(archive.namelist())
        if layout.ENGINE_FILE in names:
            raise EngineBuildError(f"{mar} already holds {layout.ENGINE_FILE}: build the GPU archive without --engine")
        archive.write(engine, layout.ENGINE_FILE)
        archive.write(layout.sidecar_path(engine), layout.ENGINE_SIDECAR_FILE)


def build_with_tensorrt(onnx: Path, engine: Path) -> None:
    """The default builder: export.trt_engine with its default profile (the GPU archive's batchSize, the model's max_length)."""
    from export.trt_engine import default_profile, engine_from_onnx
    from handler.spec import ModelSpec

    spec = ModelSpec.load(onnx.parent)
    engine_from_onnx(onnx, engine, default_profile(spec), "fp16")


def prepare_archive(mar: Path, cache: Path, out_dir: Path, platform: GpuPlatform | None, skip_reason: str, build: EngineBuilder) -> EngineResult:
    """Write `out_dir/<mar name>` with the engine of this machine when one can be had, else the archive as is."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / mar.name
    with tempfile.TemporaryDirectory(prefix="bert_trt_engine_") as tmp:
        with zipfile.ZipFile(mar) as archive:
            names = set(archive.namelist())
            if platform is not None and layout.ONNX_FILE not in names:
                platform, skip_reason = None, f"{mar.name} holds no {layout.ONNX_FILE}: build it with --no-onnx-int8 for a GPU image"
            if platform is not None:
                archive.extract(layout.ONNX_FILE, tmp)
                archive.extract(layout.SPEC_FILE, tmp)
        result = ensure_engine(Path(tmp) / layout.ONNX_FILE, cache, platform, build, skip_reason)
    if result.engine is None:
        shutil.copyfile(mar, out)
    else:
        add_engine_to_mar(mar, result.engine, out)
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mar", type=Path, required=True, help="the archive to serve (with model.onnx for the engine build)")
    parser.add_argument("--cache", type=Path, required=True, help="engine cache folder (a volume)")
    parser.add_argument("--out", type=Path, required=True, help="model store TorchServe starts from")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    platform, reason = detect_platform()
    result = prepare_archive(args.mar, args.cache, args.out, platform, reason, build_with_tensorrt)
    print(f"engine cache: {result.outcome.value}: {result.reason}", flush=True)


if __name__ == "__main__":
    run_cli(main)
