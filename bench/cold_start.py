"""Cold start per backend: seconds until a worker is ready (imports, load, warm-up) and the first request's
latency against the steady state, in-process as TorchServe drives a worker.

    .venv/bin/python -m bench.cold_start          # the default model; writes bench_results/cold_start.json

Each backend runs in a fresh Python process, so imports are part of the time, as in a new worker.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

from harness.torchserve import REPO

BACKEND_SETTINGS = {
    "onnxruntime_int8": {"backend": "onnxruntime", "onnx_int8": True},
    "onnxruntime_fp32": {"backend": "onnxruntime", "onnx_int8": False},
    "torch_cpu": {"backend": "torch_cpu"},
}

PROBE = textwrap.dedent(
    """
    import json, statistics, sys, time
    started = time.perf_counter()
    from harness.inprocess import handle_batch, started_handler
    handler, context = started_handler(sys.argv[1], model_yaml={"minWorkers": 1, "handler": json.loads(sys.argv[2])})
    ready_s = time.perf_counter() - started
    def one(text):
        t0 = time.perf_counter()
        handle_batch(handler, context, [text.encode()])
        return (time.perf_counter() - t0) * 1000
    first_ms = one("the first request after start")
    steady = [one(f"a steady request number {i}") for i in range(30)]
    print(json.dumps({"backend": handler.classifier.backend.name, "ready_s": round(ready_s, 2), "first_request_ms": round(first_ms, 2),
                      "steady_median_ms": round(statistics.median(steady), 2)}))
    """
)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=REPO / "artifacts/default/checkpoint")
    parser.add_argument("--export-dir", type=Path, default=REPO / "artifacts/default/export")
    parser.add_argument("--out", type=Path, default=REPO / "bench_results")
    parser.add_argument("--repeats", type=int, default=3)
    return parser


def main() -> None:
    from harness.models import model_dir_like_mar

    args = build_parser().parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = model_dir_like_mar(args.checkpoint, args.export_dir, args.out / "cold_start_model_dir")
    rows = []
    for name, settings in BACKEND_SETTINGS.items():
        runs = []
        for _ in range(args.repeats):
            result = subprocess.run([sys.executable, "-c", PROBE, str(model_dir), json.dumps(settings)], capture_output=True, text=True, check=True)
            runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        row = {"variant": name, "backend": runs[0]["backend"]}
        row |= {key: statistics.median(run[key] for run in runs) for key in ("ready_s", "first_request_ms", "steady_median_ms")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (args.out / "cold_start.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
