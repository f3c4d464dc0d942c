"""Pack a fine-tuned checkpoint (and optionally its ONNX export and a TensorRT engine) into a .mar.

    python build_mar.py --checkpoint artifacts/default/checkpoint --export-dir artifacts/default/export

The command line over export/mar.py (which says what the archive holds). Defaults of every
option come from the typed settings: handler/settings.py and export/mar.py:TorchServeSettings.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from export.mar import HANDLER_SOURCE, SERVING_TARGETS, MarRequest, TorchServeSettings, build_mar
from handler import layout
from handler.errors import run_cli
from handler.settings import BACKEND_NAMES, PAIR_TRUNCATION_POLICIES, TRUNCATION_POLICIES, HandlerSettings, OnnxRuntimeOptions, TorchCpuOptions


def build_parser() -> argparse.ArgumentParser:
    """The command line (parse_args turns it into a `MarRequest`)."""
    defaults = HandlerSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/default/checkpoint"), help="fine-tuned HF checkpoint folder")
    parser.add_argument("--export-dir", type=Path, help=f"folder with {layout.ONNX_FILE} + {layout.SPEC_FILE} from export.onnx_export")
    parser.add_argument("--engine", type=Path, help="TensorRT engine (its .json sidecar must sit beside it)")
    parser.add_argument("--model-name", default="bert_trt")
    parser.add_argument("--handler", type=Path, default=HANDLER_SOURCE / layout.HANDLER_ENTRY, help="handler entry file (benchmarks pass a baseline)")
    parser.add_argument("--version", default="1.0")
    parser.add_argument("--out", type=Path, default=Path("model_store"))
    parser.add_argument("--backend", default=defaults.backend, choices=["auto", *BACKEND_NAMES])
    parser.add_argument("--max-length", type=int, help="truncate texts to this many tokens (default: the spec's, 128)")
    parser.add_argument("--truncation", choices=TRUNCATION_POLICIES, default=defaults.truncation, help="what a longer text keeps (README; pair models: head)")
    parser.add_argument(
        "--pair-truncation", choices=PAIR_TRUNCATION_POLICIES, default=defaults.pair_truncation, help="pair models: which text of a longer pair is cut"
    )  # fmt: skip
    parser.add_argument("--max-chunks", type=int, default=defaults.max_chunks, help="windows per text at most with --truncation chunks")
    parser.add_argument("--max-batch-tokens", type=int, default=defaults.max_batch_tokens, help="padded tokens per backend call at most (0: no bound)")
    parser.add_argument("--response-cache-size", type=int, default=defaults.response_cache_size, help="texts whose predictions a worker remembers (0: off)")
    parser.add_argument(
        "--num-threads", type=int,
        help="CPU threads per worker of both CPU backends (default: ONNX Runtime every usable core, or usable cores / minWorkers "
             "with --onnx-spinning; torch_cpu usable cores / minWorkers)",
    )  # fmt: skip
    parser.add_argument("--onnx-int8", action=argparse.BooleanOptionalAction, default=defaults.onnxruntime.int8, help="onnxruntime runs model.int8.onnx when the archive has it")
    parser.add_argument("--onnx-spinning", action=argparse.BooleanOptionalAction, default=defaults.onnxruntime.spinning, help="ONNX Runtime threads spin while idle")
    parser.add_argument("--cpu-sub-batch", type=int, default=defaults.onnxruntime.sub_batch, help="CPU backends: texts per forward pass, length-sorted")
    parser.add_argument(
        "--target", choices=SERVING_TARGETS, help="whose TorchServe defaults below apply (default: gpu when --engine is given, else cpu)"
    )
    cpu, gpu = TorchServeSettings.for_target("cpu"), TorchServeSettings.for_target("gpu")
    parser.add_argument("--batch-size", type=int, help=f"TorchServe batchSize (cpu: {cpu.batch_size}, gpu: {gpu.batch_size})")
    parser.add_argument("--max-batch-delay", type=int, help=f"TorchServe maxBatchDelay in ms (cpu: {cpu.max_batch_delay_ms}, gpu: {gpu.max_batch_delay_ms})")
    parser.add_argument("--min-workers", type=int, help=f"cpu: {cpu.min_workers}, gpu: {gpu.min_workers}")
    parser.add_argument("--max-workers", type=int, help=f"cpu: {cpu.max_workers}, gpu: {gpu.max_workers}")
    parser.add_argument("--response-timeout", type=int, help=f"seconds a batch may take (default {cpu.response_timeout_s})")
    parser.add_argument("--startup-timeout", type=int, help=f"seconds a worker may take to load and warm up (default {cpu.startup_timeout_s})")
    parser.add_argument("--max-retry-timeout", type=int, help=f"seconds TorchServe keeps restarting a failing worker (default {cpu.max_retry_timeout_s}: a week)")
    return parser


def parse_args(argv: list[str] | None = None) -> MarRequest:
    """The `MarRequest` described by the command line."""
    args = build_parser().parse_args(argv)
    serving = TorchServeSettings.for_target(args.target or ("gpu" if args.engine else "cpu"))
    cpu = {"num_threads": args.num_threads, "sub_batch": args.cpu_sub_batch}
    handler = HandlerSettings(
        backend=args.backend,
        max_length=args.max_length,
        truncation=args.truncation,
        pair_truncation=args.pair_truncation,
        max_chunks=args.max_chunks,
        max_batch_tokens=args.max_batch_tokens or None,
        response_cache_size=args.response_cache_size,
        onnxruntime=OnnxRuntimeOptions(int8=args.onnx_int8, spinning=args.onnx_spinning, **cpu),
        torch_cpu=TorchCpuOptions(**cpu),
    )
    given = {
        "batch_size": args.batch_size, "max_batch_delay_ms": args.max_batch_delay, "min_workers": args.min_workers,
        "max_workers": args.max_workers, "response_timeout_s": args.response_timeout, "startup_timeout_s": args.startup_timeout,
        "max_retry_timeout_s": args.max_retry_timeout,
    }  # fmt: skip
    torchserve = replace(serving, **{name: value for name, value in given.items() if value is not None})
    return MarRequest(args.checkpoint, args.export_dir, args.engine, args.model_name, args.version, args.out, args.handler, handler, torchserve)


def main() -> None:
    build_mar(parse_args())


if __name__ == "__main__":
    run_cli(main)
