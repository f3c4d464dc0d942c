"""ONNX -> serialized TensorRT engine (+ JSON sidecar), with the TensorRT 10/11 Python API.

    python -m export.trt_engine --onnx artifacts/default/export/model.onnx --engine artifacts/default/model.plan

Run it on the GPU model and TensorRT version that will serve: an engine only runs there. It
writes the engine and its JSON sidecar (TensorRT version, GPU name and compute
capability, precision, profile ranges, I/O names and dtypes, sha256 of the ONNX), which the
handler checks before it deserializes the engine, and prints the equivalent ``trtexec`` command.

Precision: fp16 (default) or fp32. TensorRT 10 takes fp16 as a builder flag on the fp32 ONNX.
TensorRT 11 is strongly typed (the FP16 flag is gone): precision comes from the graph, so this
command writes ``model.fp16.onnx`` itself (ONNX Runtime's transformer tools' float16 conversion:
fp16 weights and matmuls; LayerNorm, Softmax, reductions, pow/sqrt and erf kept in fp32; fp32
inputs/outputs), checks it against the fp32 PyTorch checkpoint with ONNX Runtime (``--checkpoint``;
max |Δlogit| ≤ 0.05 and the same argmax on every text, else it stops), and builds from it. The
sidecar says which way fp16 was made (``fp16_by``).

int8 and fp8 (explicit quantization): the engine is built from TensorRT's QDQ graph,
``model.qdq-int8.onnx`` / ``model.qdq-fp8.onnx`` (symmetric Q/DQ around every weight MatMul, scales
from calibration texts), which this command writes with ``export.quantize`` when it is missing
(``--calibration`` / ``--evaluation`` texts; refused over the accuracy budget). The network is
strongly typed where TensorRT has that flag: the projections run int8/fp8 and the rest at the graph's
fp32. On TensorRT 10 (which still has the FP16 flag) the network is weakly typed with FP16 on too, so
the rest runs fp16. fp8 needs FP8 tensor cores (compute capability 8.9+: Ada, Hopper, Blackwell);
elsewhere it is refused before anything is built. The sidecar records the quantization record.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from export.mar import GPU_TARGET_SETTINGS
from export.quantize import add_arguments as add_quantization_arguments
from handler import layout
from handler.errors import EngineBuildError, run_cli
from handler.spec import ModelSpec

#: the TensorRT release this module's API path is written against (TensorRT 10: fp16 is a builder flag); the
#: strongly typed TensorRT 11 path (fp16 from the graph) is handled too, but 10 is the one to install
TENSORRT_VERSION = "10.13.3.9"
INSTALL_HINT = (
    "TensorRT's Python package is not installed. Install the build that matches your CUDA from NVIDIA's index, e.g.\n"
    f"  pip install tensorrt-cu12=={TENSORRT_VERSION} --extra-index-url https://pypi.nvidia.com   (CUDA 13: tensorrt-cu13=={TENSORRT_VERSION})\n"
    "or run inside NVIDIA's container nvcr.io/nvidia/tensorrt. The PyPI 'tensorrt' packages alone only fetch\n"
    "the real libraries from pypi.nvidia.com at install time."
)


#: the batchSize an engine is served with: the GPU archive's (`build_mar.py --target gpu`); the profile is tuned
#: for it (opt) and covers twice it (max: a batch of requests may carry more texts than requests)
SERVED_BATCH_SIZE = GPU_TARGET_SETTINGS.batch_size
#: the built-in model's files, the defaults of --onnx, --checkpoint and --parity-texts
DEFAULT_ONNX = Path("artifacts/default/export") / layout.ONNX_FILE
DEFAULT_CHECKPOINT = Path("artifacts/default/checkpoint")
DEFAULT_PARITY_TEXTS = Path("artifacts/data/test.csv")


@dataclass(frozen=True)
class ProfileRange:
    """One optimization profile: (batch, sequence) at min / opt / max, the same for every input."""

    min_batch: int = 1
    opt_batch: int = SERVED_BATCH_SIZE
    max_batch: int = 2 * SERVED_BATCH_SIZE
    min_seq: int = 1
    opt_seq: int = 64
    max_seq: int = 128

    def __post_init__(self):
        if not (1 <= self.min_batch <= self.opt_batch <= self.max_batch):
            raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got {self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if not (1 <= self.min_seq <= self.opt_seq <= self.max_seq):
            raise ValueError(f"need 1 <= min_seq <= opt_seq <= max_seq, got {self.min_seq}/{self.opt_seq}/{self.max_seq}")

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        return (self.min_batch, self.min_seq), (self.opt_batch, self.opt_seq), (self.max_batch, self.max_seq)


def default_profile(spec: ModelSpec, batch_size: int = SERVED_BATCH_SIZE) -> ProfileRange:
    """Profile implied by the serving settings: batches up to 2 x batchSize, sequences up to max_length."""
    return ProfileRange(
        min_batch=1,
        opt_batch=batch_size,
        max_batch=2 * batch_size,
        min_seq=1,
        opt_seq=min(64, spec.max_length),
        max_seq=spec.max_length,
    )


def trtexec_command(onnx_path: Path, engine_path: Path, spec: ModelSpec, profile: ProfileRange, precision: str, timing_cache: Path | None) -> str:
    """The trtexec invocation that builds the same engine."""
    names = ("min", "opt", "max")
    parts = [f"trtexec --onnx={onnx_path} --saveEngine={engine_path}"]
    for label, (batch, seq) in zip(names, profile.shapes()):
        parts.append(f"--{label}Shapes=" + ",".join(f"{name}:{batch}x{seq}" for name in spec.input_names))
    if precision == "fp16":
        parts.append("--fp16  # TensorRT 10; on 11 drop it and pass the fp16 ONNX")
    if precision in QUANTIZED_PRECISIONS:
        parts.append(f"--stronglyTyped  # TensorRT 11; on 10: --fp16 --{precision}")
    if timing_cache:
        parts.append(f"--timingCacheFile={timing_cache}")
    return " \\\n    ".join(parts)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_is_fp16(onnx_path: Path) -> bool:
    """True when the ONNX's weight matrices are mostly float16 (e.g. after ModelOpt AutoCast)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    types = [init.data_type for init in model.graph.initializer if len(init.dims) >= 2]
    return bool(types) and types.count(onnx.TensorProto.FLOAT16) * 2 > len(types)


#: ops left in fp32 by the fp16 conversion: normalizations, softmax, reductions and GELU's erf lose range or precision in fp16
FP16_KEPT_FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf")


def fp16_onnx(onnx_path: Path) -> Path:
    """Write the mixed-precision ``model.fp16.onnx`` beside `onnx_path` (fp32 inputs and outputs) and return its path."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(onnx_path)))
    model.convert_float_to_float16(keep_io_types=True, op_block_list=list(FP16_KEPT_FP32_OPS))
    out = onnx_path.with_name(layout.FP16_ONNX_FILE)
    onnx.save(model.model, str(out))
    return out


#: precisions built from a QDQ graph (explicit quantization)
QUANTIZED_PRECISIONS = ("int8", "fp8")
def check_fp8_gpu(capability: tuple[int, int], gpu_name: str) -> None:
    """Raise `EngineBuildError` when a GPU of `capability` has no FP8 tensor cores."""
    from handler.kernels.fp8_bert import FP8_MIN_CAPABILITY

    if tuple(capability) < FP8_MIN_CAPABILITY:
        raise EngineBuildError(
            f"--precision fp8 needs FP8 tensor cores (compute capability 8.9+: Ada, Hopper, Blackwell); {gpu_name} is sm "
            f"{capability[0]}.{capability[1]}: build --precision int8 or fp16 instead"
        )


def engine_from_onnx(
    onnx_path: Path,
    engine_path: Path,
    profile: ProfileRange,
    precision: str = "fp16",
    timing_cache: Path | None = None,
    workspace_gib: float | None = None,
    trt=None,
) -> dict:
    """Parse the ONNX, build with one optimization profile, write the engine and its sidecar; returns the sidecar.
    Raises `EngineBuildError` when TensorRT is missing, refuses the ONNX or fails to build."""
    if trt is None:
        try:
            import tensorrt as trt
        except ImportError:
            raise EngineBuildError(INSTALL_HINT) from None
    import torch

    spec = ModelSpec.load(onnx_path.parent)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    quantized = precision in QUANTIZED_PRECISIONS
    if precision == "fp16" and not has_fp16_flag and not onnx_is_fp16(onnx_path):
        raise EngineBuildError(
            f"TensorRT {trt.__version__} is strongly typed (no FP16 builder flag): build from an fp16 ONNX\n"
            f"(`python -m export.trt_engine --precision fp16` writes {layout.FP16_ONNX_FILE} and checks it), or build with --precision fp32"
        )
    if precision == "fp8":
        check_fp8_gpu(torch.cuda.get_device_capability(), torch.cuda.get_device_name())
    # weakly typed (precision from builder flags) only where TensorRT still has the FP16 flag and one is wanted
    weakly_typed = has_fp16_flag and precision in ("fp16", *QUANTIZED_PRECISIONS)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") and not weakly_typed:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_path}:\n  {errors}")

    config = builder.create_builder_config()
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if weakly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        if quantized:  # explicit quantization in a weakly typed network: the Q/DQ precision must be enabled too
            config.set_flag(trt.BuilderFlag.INT8 if precision == "int8" else trt.BuilderFlag.FP8)
    optimization_profile = builder.create_optimization_profile()
    low, opt, high = profile.shapes()
    for name in spec.input_names:
        optimization_profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimization_profile)
    if timing_cache:
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError("TensorRT failed to build the engine; rerun with a smaller --max-batch / --max-seq, or see the log above")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    if timing_cache:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))

    io = [
        {"name": network.get_input(i).name, "mode": "input", "dtype": str(network.get_input(i).dtype).split(".")[-1]}
        for i in range(network.num_inputs)
    ] + [
        {"name": network.get_output(i).name, "mode": "output", "dtype": str(network.get_output(i).dtype).split(".")[-1]}
        for i in range(network.num_outputs)
    ]
    major, minor = torch.cuda.get_device_capability()
    sidecar = {
        "tensorrt_version": trt.__version__,
        "gpu_name": torch.cuda.get_device_name(),
        "compute_capability": f"{major}.{minor}",
        "precision": precision,
        "fp16_by": ("builder flag" if has_fp16_flag else "fp16 ONNX (strongly typed network)") if precision == "fp16" else None,
        "network": "weakly typed (builder flags)" if weakly_typed else "strongly typed" if flags else "default",
        "quantization": quantization_record(onnx_path) if quantized else None,
        "profile": asdict(profile),
        "io": io,
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256_of(onnx_path),
        "max_length": spec.max_length,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    layout.sidecar_path(engine_path).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def quantization_record(qdq_onnx: Path) -> dict | None:
    """The record export.quantize wrote beside a QDQ graph (None when there is none)."""
    record = layout.sidecar_path(qdq_onnx)
    return json.loads(record.read_text()) if record.is_file() else None


def builder_has_fp16_flag() -> bool:
    """True on TensorRT 10 (fp16 is a builder flag), False on strongly typed TensorRT 11; raises `EngineBuildError` without TensorRT."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineBuildError(INSTALL_HINT) from None
    return hasattr(trt.BuilderFlag, "FP16")


def checked_fp16_onnx(onnx_path: Path, checkpoint: Path, parity_texts: Path | None) -> Path:
    """`fp16_onnx`, then the exporter's parity check against the fp32 checkpoint (on pairs for a pair model;
    raises `ParityError` over tolerance)."""
    from export.onnx_export import FP16_LOGIT_TOLERANCE, check_onnx_parity, parity_inputs

    path = fp16_onnx(onnx_path)
    texts, pairs = parity_inputs(parity_texts, ModelSpec.load(onnx_path.parent).text_pair)
    report = check_onnx_parity(path, checkpoint, texts, tolerance=FP16_LOGIT_TOLERANCE, pairs=pairs)
    print(f"wrote {path}: {report.summary()}")
    return path


def qdq_onnx(onnx_path: Path, precision: str, args: argparse.Namespace) -> Path:
    """TensorRT's QDQ graph for `precision` beside `onnx_path`, written by export.quantize when missing."""
    from export.quantize import quantize_from_args

    path = onnx_path.with_name(layout.QDQ_ONNX_FILES[precision])
    if path.is_file():
        print(f"building from {path} (delete it to calibrate again)")
    else:
        quantize_from_args(onnx_path, args.checkpoint, args, (f"tensorrt-{precision}",))
    return path


def reference_files(args: argparse.Namespace, needed: tuple[str, ...]) -> tuple[Path | None, Path | None]:
    """(checkpoint, parity texts) for the checks of `args.onnx`: as given; for the built-in model's ONNX, its own
    files by default. Raises `EngineBuildError` when a user's ONNX comes without the `needed` options: checking
    it against the built-in model would compare two different models."""
    built_in = Path(args.onnx).resolve() == DEFAULT_ONNX.resolve()
    checkpoint = args.checkpoint or (DEFAULT_CHECKPOINT if built_in else None)
    parity_texts = args.parity_texts or (DEFAULT_PARITY_TEXTS if built_in else None)
    missing = [option for option, value in (("--checkpoint", checkpoint), ("--parity-texts", parity_texts)) if option in needed and value is None]
    if missing:
        raise EngineBuildError(
            f"--precision {args.precision} with --onnx {args.onnx} checks the ONNX against the fp32 model it was exported from: pass "
            f"{' and '.join(missing)} (the checkpoint given to export.onnx_export, and a label,txt CSV of its texts); the defaults "
            "are the built-in model's, which would compare a different model"
        )
    return checkpoint, parity_texts


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=DEFAULT_ONNX, help=f"the fp32 ONNX from export.onnx_export (default: the built-in model's, {DEFAULT_ONNX})")
    parser.add_argument("--engine", type=Path, default=Path("artifacts/default") / layout.ENGINE_FILE)
    parser.add_argument("--precision", choices=["fp16", "fp32", *QUANTIZED_PRECISIONS], default="fp16")
    parser.add_argument(
        "--batch-size", type=int, default=SERVED_BATCH_SIZE,
        help=f"TorchServe batchSize the profile is tuned for (default {SERVED_BATCH_SIZE}: the GPU archive's, build_mar.py --target gpu)",
    )  # fmt: skip
    for bound in ("min", "opt", "max"):
        parser.add_argument(f"--{bound}-batch", type=int, help=f"{bound} batch of the profile (default from --batch-size)")
        parser.add_argument(f"--{bound}-seq", type=int, help=f"{bound} sequence length of the profile (default from max_length)")
    parser.add_argument("--timing-cache", type=Path, help="read and update this timing cache file (faster rebuilds)")
    parser.add_argument("--workspace-gib", type=float, help="builder workspace limit")
    parser.add_argument("--print-trtexec", action="store_true", help="only print the equivalent trtexec command")
    parser.add_argument(
        "--checkpoint", type=Path,
        help=f"the fp32 checkpoint --onnx was exported from: the reference of the fp16 ONNX's parity check and the int8/fp8 calibration "
             f"(default: {DEFAULT_CHECKPOINT} with the default --onnx; required with any other --onnx when it is used)",
    )  # fmt: skip
    parser.add_argument(
        "--parity-texts", type=Path,
        help=f"label,txt CSV for that check (a pair model: with a txt_pair column; default: {DEFAULT_PARITY_TEXTS} with the default "
             "--onnx; required with any other --onnx when the check runs)",
    )  # fmt: skip
    add_quantization_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    spec = ModelSpec.load(args.onnx.parent)
    defaults = asdict(default_profile(spec, args.batch_size))
    overrides = {f"{b}_{kind}": getattr(args, f"{b}_{kind}") for b in ("min", "opt", "max") for kind in ("batch", "seq")}
    profile = ProfileRange(**{key: overrides[key] or value for key, value in defaults.items()})
    shown_onnx = args.onnx.with_name(layout.QDQ_ONNX_FILES[args.precision]) if args.precision in QUANTIZED_PRECISIONS else args.onnx
    command = trtexec_command(shown_onnx, args.engine, spec, profile, args.precision, args.timing_cache)
    print(f"equivalent trtexec command:\n  {command}")
    if args.print_trtexec:
        return
    onnx_path = args.onnx
    if args.precision == "fp16" and not builder_has_fp16_flag() and not onnx_is_fp16(onnx_path):
        args.checkpoint, args.parity_texts = reference_files(args, ("--checkpoint", "--parity-texts"))
        onnx_path = checked_fp16_onnx(onnx_path, args.checkpoint, args.parity_texts)
    if args.precision in QUANTIZED_PRECISIONS:
        args.checkpoint, _ = reference_files(args, ("--checkpoint",))
        onnx_path = qdq_onnx(args.onnx, args.precision, args)
    sidecar = engine_from_onnx(onnx_path, args.engine, profile, args.precision, args.timing_cache, args.workspace_gib)
    print(f"wrote {args.engine} and its sidecar: TensorRT {sidecar['tensorrt_version']}, {sidecar['gpu_name']} (sm {sidecar['compute_capability']}), {args.precision}")


if __name__ == "__main__":
    run_cli(main)
