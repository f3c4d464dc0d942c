"""Soak: minutes of steady mixed load (short, long and bad requests) against a real TorchServe, with the
worker's and the frontend's memory sampled throughout.

    .venv/bin/python -m bench.soak --minutes 10          # the default archive (make mar); writes bench_results/soak.*

Reports requests sent, unexpected answers (a good request not answered 200, a bad one not answered 400),
worker RSS, frontend RSS and frontend Java heap (jstat) over time, and the growth per 10k requests after
the first quarter of the run (warm-up excluded). tests/integration/test_soak.py runs a short version.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psutil

from harness.load import run_load
from harness.torchserve import REPO, TorchServe

GOOD = [
    "great value, would buy again",
    "the delivery was late and the box was crushed, but support sorted it out within a day and the product works fine",
    "meh",
    "I have owned this kettle for three years. " * 12,
    "Absolutely terrible. Broke on day two. Never again!!!",
]
BAD = [b"\xff\xfe not utf-8", b"", b"[]", b'{"nope": 1}']


def expected_status(payload) -> int:
    """What a correct server answers this payload."""
    return 400 if payload in BAD else 200


def memory_sample(server: TorchServe) -> dict:
    """RSS (MiB) of the frontend and of all its workers, and the frontend's Java heap in use (MiB, via jstat)."""
    frontend = psutil.Process(int(server.pid_file.read_text()))
    workers = frontend.children(recursive=True)
    sample = {"time": time.monotonic(), "frontend_rss_mib": frontend.memory_info().rss / 2**20,
              "worker_rss_mib": sum(w.memory_info().rss for w in workers) / 2**20, "frontend_heap_mib": None}  # fmt: skip
    jstat = shutil.which("jstat")
    if jstat:
        result = subprocess.run([jstat, "-gc", str(frontend.pid)], capture_output=True, text=True, timeout=10)
        lines = result.stdout.splitlines()
        if result.returncode == 0 and len(lines) >= 2:
            used = dict(zip(lines[0].split(), lines[1].split()))  # KiB per heap region
            sample["frontend_heap_mib"] = sum(float(used[k]) for k in ("S0U", "S1U", "EU", "OU") if k in used) / 1024
    return sample


def run_soak(server: TorchServe, seconds: float, concurrency: int = 4, sample_every_s: float = 2.0) -> dict:
    """Mixed load for `seconds`; returns the summary and the memory samples."""
    samples, done = [], threading.Event()

    def sampler():
        while not done.is_set():
            samples.append(memory_sample(server))
            done.wait(sample_every_s)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    payloads = GOOD * 4 + BAD  # about one request in six is bad
    started = time.monotonic()
    outcomes = run_load(server, payloads, concurrency, seconds, timeout=30)
    done.set()
    thread.join(10)
    samples.append(memory_sample(server))
    unexpected = [o for o in outcomes if o.status != expected_status(o.payload)]
    steady = [s for s in samples if s["time"] >= started + seconds / 4]
    steady_requests = sum(o.started >= started + seconds / 4 for o in outcomes)

    def growth(key: str) -> float | None:
        values = [s[key] for s in steady if s[key] is not None]
        if len(values) < 2 or not steady_requests:
            return None
        return round((values[-1] - values[0]) / steady_requests * 10_000, 2)

    return {
        "seconds": round(time.monotonic() - started, 1),
        "requests": len(outcomes),
        "bad_requests_sent": sum(o.payload in BAD for o in outcomes),
        "unexpected": len(unexpected),
        "unexpected_examples": sorted({(o.status, o.error, str(o.payload)[:40]) for o in unexpected})[:5],
        "worker_rss_mib": [round(samples[0]["worker_rss_mib"], 1), round(samples[-1]["worker_rss_mib"], 1)],
        "frontend_rss_mib": [round(samples[0]["frontend_rss_mib"], 1), round(samples[-1]["frontend_rss_mib"], 1)],
        "worker_rss_growth_mib_per_10k": growth("worker_rss_mib"),
        "frontend_rss_growth_mib_per_10k": growth("frontend_rss_mib"),
        "frontend_heap_growth_mib_per_10k": growth("frontend_heap_mib"),
        "samples": [{k: (round(v - started, 1) if k == "time" else v if v is None else round(v, 1)) for k, v in s.items()} for s in samples],
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "bench_results")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with TorchServe(workdir=args.out / "ts_soak", model_store=args.store).running() as server:
        report = run_soak(server, args.minutes * 60, args.concurrency, sample_every_s=5)
    (args.out / "soak.json").write_text(json.dumps(report, indent=1))
    with (args.out / "soak.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(report["samples"][0]))
        writer.writeheader()
        writer.writerows(report["samples"])
    plot(report["samples"], args.out / "soak.png")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4))
    for key in ("worker_rss_mib", "frontend_rss_mib", "frontend_heap_mib"):
        points = [(s["time"], s[key]) for s in samples if s[key] is not None]
        axis.plot([t for t, _ in points], [v for _, v in points], label=key)
    axis.set(xlabel="seconds", ylabel="MiB", title="soak: memory under steady mixed load")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
