"""TorchServe configuration sweep in the spirit of Triton's model analyzer: batchSize x maxBatchDelay x workers.

    .venv/bin/python -m bench.config_sweep [--latency-budget-ms 100]

Each configuration is registered on one TorchServe (model API on) and loaded at a low and a
high concurrency, bounded in requests and seconds. Prints the configuration with the highest
throughput and the one with the highest throughput whose p99 stays within the latency budget;
writes config_sweep.csv / config_sweep.png. Worker count w>1 uses bert_trt_w{w}.mar, built with
`build_mar.py --min-workers w` so each worker takes cores / w threads (`make bench-mars`).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from bench.load_test import Config, run_configs, write_results
from training.data import read_labelled_csv


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--test-csv", type=Path, default=REPO / "artifacts/data/test.csv")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--delays", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--max-requests", type=int, default=600)
    parser.add_argument("--max-seconds", type=float, default=10)
    parser.add_argument("--latency-budget-ms", type=float, default=100, help="p99 budget at the highest concurrency")
    parser.add_argument("--out", type=Path, default=REPO / "bench_results")
    return parser


def main() -> None:
    args = build_parser().parse_args()

    _, texts = read_labelled_csv(args.test_csv)
    configs = []
    for batch, delay, workers in itertools.product(args.batch_sizes, args.delays, args.workers):
        mar = "bert_trt_nocache.mar" if workers == 1 else f"bert_trt_w{workers}.mar"  # make bench-mars: the cache off
        if not (args.store / mar).is_file():
            sys.exit(f"missing {args.store / mar}: run `make bench-mars`")
        configs.append(Config("bert_trt", mar, batch, delay, workers))
    rows = run_configs(args.store, configs, args.concurrency, texts, args.max_requests, args.max_seconds, args.out / "ts_config_sweep")
    write_results(rows, args.out, "config_sweep", "bert_trt: batchSize x maxBatchDelay x workers")

    loaded = [row for row in rows if row["concurrency"] == max(args.concurrency)]
    best = max(loaded, key=lambda row: row["throughput_rps"])
    within = [row for row in loaded if row["p99_ms"] <= args.latency_budget_ms]
    print(f"\nmax throughput: {best['config']}: {best['throughput_rps']} req/s, p99 {best['p99_ms']} ms at c{best['concurrency']}")
    if within:
        pick = max(within, key=lambda row: row["throughput_rps"])
        print(f"best within p99 <= {args.latency_budget_ms} ms: {pick['config']}: {pick['throughput_rps']} req/s, p99 {pick['p99_ms']} ms")
    else:
        print(f"no configuration keeps p99 <= {args.latency_budget_ms} ms at c{max(args.concurrency)}")
    single = {row["config"]: row for row in rows if row["concurrency"] == min(args.concurrency)}
    near_best = [row["config"] for row in loaded if row["throughput_rps"] >= 0.80 * best["throughput_rps"]]
    balanced = min(near_best, key=lambda label: single[label]["p99_ms"])
    print(f"balanced (shipped by build_mar.py): {balanced}: lowest p99 at c{min(args.concurrency)} ({single[balanced]['p99_ms']} ms) "
          f"among configurations within 80% of the best throughput")  # fmt: skip


if __name__ == "__main__":
    main()
