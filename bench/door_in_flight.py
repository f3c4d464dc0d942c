"""The KServe door's scheduling measured in-process: one service, its micro-batcher with 1, 2 or 4 batches
in flight, and closed-loop clients sending one text each (no HTTP: what the server adds is measured by
bench/peer_comparison.py). For each setting: requests/s, p50 and p99 latency, and how many answers differ
from the same text alone (batch invariance). The row "2 unlocked" runs 2 in flight with the backend's
lock removed (what the door did before the concurrency contract) to show what the lock costs and what it
prevents. Prints a table and writes door_in_flight.csv / .json under --out.

    python -m bench.door_in_flight --model-dir .carry/default_model_dir --texts .carry/test.csv --gpu-id 0
    python -m bench.door_in_flight --model-dir DIR --backend onnxruntime --seconds 1      (CPU)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from handler.errors import run_cli
from handler.payload import ParsedRequest
from handler.service import load_service
from handler.settings import HandlerSettings
from kserve_server.batcher import MicroBatcher
from training.data import read_labelled_csv

#: batches in flight measured by default; "2 unlocked" is added to them
DEFAULT_IN_FLIGHT = "1,2,4"


def settings_for(in_flight: str) -> list[tuple[str, int, bool]]:
    """(label, batches in flight, keep the backend's lock) per setting: each count locked, then 2 unlocked."""
    counts = [int(count) for count in in_flight.split(",")]
    return [(str(count), count, True) for count in counts] + [("2 unlocked", 2, False)]


async def closed_loop(batcher: MicroBatcher, texts: list[str], clients: int, seconds: float) -> tuple[list[float], list[tuple[str, np.ndarray]]]:
    """`clients` loops each sending the next text and waiting for its answer, for `seconds`; latencies (ms) and answers."""
    latencies, answers = [], []
    deadline = time.perf_counter() + seconds
    position = iter(range(10**9))

    async def client() -> None:
        while time.perf_counter() < deadline:
            text = texts[next(position) % len(texts)]
            start = time.perf_counter()
            (answered,) = await batcher.submit([ParsedRequest([text], wants_list=False)])
            latencies.append((time.perf_counter() - start) * 1000)
            answers.append((text, answered.predictions[0].probabilities))

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, answers


def measure(service, texts: list[str], alone: dict, in_flight: int, locked: bool, clients: int, seconds: float, batch_texts: int) -> dict:
    """One setting: throughput, latency percentiles, and answers that differ from the text alone by more than 2e-3."""
    backend = service.classifier.backend
    kept_lock = backend.infer_lock
    if not locked:
        backend.infer_lock = nullcontext()
    try:
        batcher = MicroBatcher(service.run, batch_texts, 0.0, in_flight, weight=lambda request: len(request.texts))

        async def run():
            await closed_loop(batcher, texts, clients, min(1.0, seconds))  # warm-up: every bucket met
            result = await closed_loop(batcher, texts, clients, seconds)
            await batcher.close()
            return result

        start = time.perf_counter()
        latencies, answers = asyncio.run(run())
        elapsed = time.perf_counter() - start
    finally:
        backend.infer_lock = kept_lock
    worst = max(float(np.abs(p - alone[text]).max()) for text, p in answers)
    wrong = sum(float(np.abs(p - alone[text]).max()) > 2e-3 for text, p in answers)
    ordered = sorted(latencies)
    return {
        "requests": len(latencies), "requests_per_s": round(len(latencies) / (elapsed - min(1.0, seconds)), 1),
        "p50_ms": round(statistics.median(ordered), 3), "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
        "answers_off_by_more_than_2e-3": wrong, "max_abs_dp": float(f"{worst:.3g}"),
    }  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="a folder laid out like an unpacked .mar")
    parser.add_argument("--texts", type=Path, help="label,txt CSV of texts to send (default: generated ones)")
    parser.add_argument("--backend", default="torch_cuda")
    parser.add_argument("--gpu-id", type=int)
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--batch-texts", type=int, default=64, help="the batcher's texts per batch (the GPU archive's batchSize)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-texts", type=int, default=2048)
    parser.add_argument("--in-flight", default=DEFAULT_IN_FLIGHT, help="comma-separated batches-in-flight counts to measure")
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    return parser


def main() -> None:
    args = build_parser().parse_args()

    if args.texts:
        _, texts = read_labelled_csv(args.texts)
    else:
        texts = [f"review {i}: " + "the room was fine but the breakfast was cold " * (1 + i % 7) for i in range(512)]
    texts = texts[: args.max_texts]
    service, skipped = load_service(args.model_dir, HandlerSettings(backend=args.backend), args.gpu_id)
    backend = service.classifier.backend
    print(f"backend: {backend.describe()}; concurrent_infer={backend.entry.concurrent_infer}")
    alone = {text: service.classifier.predict([text])[0].probabilities for text in dict.fromkeys(texts)}
    rows = []
    for label, in_flight, locked in settings_for(args.in_flight):
        row = {"in_flight": label, **measure(service, texts, alone, in_flight, locked, args.clients, args.seconds, args.batch_texts)}
        rows.append(row)
        print(json.dumps(row))
    base = rows[0]["requests_per_s"]
    for row in rows:
        row["throughput_vs_1"] = round(row["requests_per_s"] / base, 3)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "door_in_flight.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    facts = {"backend": backend.describe(), "texts": len(texts), "clients": args.clients, "batch_texts": args.batch_texts, "seconds": args.seconds, "rows": rows}
    (args.out / "door_in_flight.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(f"{'in flight':>11} {'req/s':>9} {'vs 1':>6} {'p50 ms':>8} {'p99 ms':>8} {'off':>5} {'max|dp|':>9}")
    for row in rows:
        print(f"{row['in_flight']:>11} {row['requests_per_s']:>9} {row['throughput_vs_1']:>6} {row['p50_ms']:>8} {row['p99_ms']:>8} "
              f"{row['answers_off_by_more_than_2e-3']:>5} {row['max_abs_dp']:>9}")  # fmt: skip
    service.close()


if __name__ == "__main__":
    run_cli(main)
