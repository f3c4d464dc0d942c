"""Two GPUs against one, from two runs of bench/gpu_torchserve.py on the same host in the same call.

    CUDA_VISIBLE_DEVICES=0   python -m bench.gpu_torchserve ... --out $OUT/one_gpu
    CUDA_VISIBLE_DEVICES=0,1 python -m bench.gpu_torchserve ... --out $OUT/two_gpus
    python -m bench.gpu_scaling --one $OUT/one_gpu --two $OUT/two_gpus --out $OUT/scaling.json

Each run registers one configuration (the same workers per GPU: N workers on one GPU, 2N on two); the
row with the highest req/s of each run is compared: speedup = 2 GPUs / 1 GPU, the workers placed on each
GPU, and per-GPU utilization and memory while serving (from that row).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def best_rows(report: dict) -> dict[str, dict]:
    """The row with the highest throughput of each configuration."""
    best: dict[str, dict] = {}
    for row in report["rows"]:
        if row["config"] not in best or row["throughput_rps"] > best[row["config"]]["throughput_rps"]:
            best[row["config"]] = row
    return best


def gpu_columns(row: dict, suffix: str) -> dict:
    return {f"{key}_{suffix}": value for key, value in row.items() if key.startswith("gpu") or key.startswith("cores_")}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", type=Path, required=True, help="gpu_torchserve.py --out folder of the one-GPU run")
    parser.add_argument("--two", type=Path, required=True, help="... of the two-GPU run")
    parser.add_argument("--out", type=Path, required=True)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    one = json.loads((args.one / "gpu_torchserve.json").read_text())
    two = json.loads((args.two / "gpu_torchserve.json").read_text())
    a = max(best_rows(one).values(), key=lambda row: row["throughput_rps"])
    b = max(best_rows(two).values(), key=lambda row: row["throughput_rps"])
    configs = [{
            "config_1gpu": a["config"], "config_2gpus": b["config"], "req_per_s_1gpu": a["throughput_rps"], "req_per_s_2gpu": b["throughput_rps"],
            "speedup_2_vs_1": round(b["throughput_rps"] / a["throughput_rps"], 2),
            "concurrency_1gpu": a["concurrency"], "concurrency_2gpu": b["concurrency"],
            **gpu_columns(a, "1gpu"), **gpu_columns(b, "2gpus"),
        }]  # fmt: skip
    head = configs[0]
    scaling = {
        "gpu": two.get("gpu"), "shape": two.get("shape"), "max_length": two.get("max_length"), "long_texts": two.get("long_texts"),
        "config_1gpu": head["config_1gpu"], "config_2gpus": head["config_2gpus"], "workers_per_gpu_1gpu": one.get("workers_per_gpu"), "req_per_s_1gpu": head["req_per_s_1gpu"], "req_per_s_2gpu": head["req_per_s_2gpu"],
        "speedup_2_vs_1": head["speedup_2_vs_1"], "workers_per_gpu": two.get("workers_per_gpu"),
        "gpu_memory_mib": {key: value for key, value in head.items() if "memory" in key},
        "configs": configs,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(scaling, indent=1) + "\n")
    for row in configs:
        print(f"{row['config_1gpu']} / {row['config_2gpus']}: 1 GPU {row['req_per_s_1gpu']} req/s, 2 GPUs {row['req_per_s_2gpu']} req/s: {row['speedup_2_vs_1']}x")


if __name__ == "__main__":
    main()
