"""End-to-end load test over HTTP against a real TorchServe, stock baseline vs bert_trt, same run.

    .venv/bin/python -m bench.load_test                      # both .mar files, concurrency 1 8 32 128
    .venv/bin/python -m bench.load_test --quick              # seconds-long smoke (CI)

Starts its own TorchServe (free loopback ports, model API on), registers one configuration at
a time (so configurations never share the CPU), and sends the default test texts from
`--concurrency` client threads. Every level is bounded by a request count and a duration.
Writes load_test.csv and load_test.png (latency vs throughput per configuration).
Build the archives first: `make mar` and `make bench-mars` (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

from training.data import read_labelled_csv
from export.mar import TorchServeSettings
from harness.torchserve import TorchServe


@dataclass
class Config:
    """One model registration: which archive, and TorchServe's batching / worker settings."""

    name: str
    mar: str
    batch_size: int
    max_batch_delay: int
    workers: int = 1

    @property
    def label(self) -> str:
        return f"{self.name} b{self.batch_size} d{self.max_batch_delay} w{self.workers}"


def register(server: TorchServe, config: Config) -> None:
    query = (
        f"url={config.mar}&model_name={config.name}&batch_size={config.batch_size}&max_batch_delay={config.max_batch_delay}"
        f"&initial_workers={config.workers}&synchronous=true"
    )
    response = server.request("POST", f"{server.management_url}/models?{query}", "management", timeout=300)
    if response.status_code != 200:
        raise RuntimeError(f"register {config.label}: {response.status_code} {response.text}")


def unregister(server: TorchServe, config: Config) -> None:
    server.request("DELETE", f"{server.management_url}/models/{config.name}", "management", timeout=120)


@dataclass(frozen=True)
class Target:
    """Where a load level sends its requests: one HTTP endpoint on 127.0.0.1, and the bodies to cycle through."""

    port: int
    path: str
    headers: dict[str, str]
    bodies: list[bytes]


def torchserve_target(server: TorchServe, model: str, texts: list[str]) -> Target:
    """Plain-text requests to TorchServe's `/predictions/{model}` with the current inference key."""
    return torchserve_key_target(int(server.inference_url.rsplit(":", 1)[1]), model, texts, server.token())


def torchserve_key_target(port: int, model: str, texts: list[str], key: str) -> Target:
    """Plain-text requests to `/predictions/{model}` of a TorchServe on 127.0.0.1:`port` with inference key `key`."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "text/plain; charset=utf-8"}
    return Target(port, f"/predictions/{model}", headers, [text.encode("utf-8") for text in texts])


def _client_process(target: Target, threads: int, max_requests: int, max_seconds: float, seed: int) -> tuple[list[float], int]:
    """`threads` client threads, each with one keep-alive connection, until the request or time budget is spent."""
    latencies: list[float] = []
    errors = [0]
    counter = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds
    bodies = target.bodies

    def client(worker: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=120)
        while time.perf_counter() < deadline:
            with lock:
                if counter[0] >= max_requests:
                    return
                index = counter[0]
                counter[0] += 1
            body = bodies[(index * 7919 + worker * 31 + seed) % len(bodies)]
            start = time.perf_counter()
            try:
                connection.request("POST", target.path, body=body, headers=target.headers)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=120)
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                latencies.append(elapsed)
                errors[0] += not ok

    pool = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return latencies, errors[0]


def run_level(target: Target, concurrency: int, max_requests: int, max_seconds: float, processes: int = 1) -> dict:
    """`concurrency` clients in total, spread over `processes` client processes (one process is GIL-bound)."""
    processes = max(1, min(processes, concurrency))
    shares = [(concurrency // processes + (i < concurrency % processes), max_requests // processes + (i < max_requests % processes)) for i in range(processes)]
    start = time.perf_counter()
    if processes == 1:
        results = [_client_process(target, concurrency, max_requests, max_seconds, 0)]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_client_process, target, threads, requests_, max_seconds, i) for i, (threads, requests_) in enumerate(shares)]
            results = [future.result() for future in futures]
    seconds = time.perf_counter() - start
    values = np.array([latency for latencies, _ in results for latency in latencies])
    return {
        "concurrency": concurrency,
        "requests": len(values),
        "errors": sum(errors for _, errors in results),
        "seconds": round(seconds, 2),
        "throughput_rps": round(len(values) / seconds, 1),
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p95_ms": round(float(np.percentile(values, 95)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
    }


def worker_peak_rss_mib(server: TorchServe) -> float:
    """Largest peak resident memory (VmHWM) among the server's Python worker processes."""
    import psutil

    pid = int(server.pid_file.read_text())
    peaks = []
    for process in psutil.Process(pid).children(recursive=True):
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            continue
        peaks += [int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")]
    return round(max(peaks, default=0.0), 1)


def run_configs(
    store: Path,
    configs: list[Config],
    concurrencies: list[int],
    texts: list[str],
    max_requests: int,
    max_seconds: float,
    workdir: Path,
    processes: int = 1,
    overrides: dict[str, str] | None = None,
    level_probe=None,
    level=None,
) -> list[dict]:
    """Start one TorchServe, then for each config: register, warm up, run every level, unregister.

    `level_probe(server)`, if given, is called before each level and returns a function that,
    called after the level, returns extra columns for its row (e.g. frontend counters).
    `level(target, concurrency) -> row`, if given, replaces this module's threaded client (warm-up included),
    e.g. bench/http_load.py's for servers beyond what threads can load.
    """
    if level is None:
        level = lambda target, concurrency: run_level(target, concurrency, max_requests, max_seconds, processes)  # noqa: E731
    server = TorchServe(workdir=workdir, model_store=store, models=[], enable_model_api=True, overrides=overrides or {})
    rows = []
    try:
        server.start()
        for config in configs:
            started = time.perf_counter()
            register(server, config)
            register_s = round(time.perf_counter() - started, 1)
            try:
                target = torchserve_target(server, config.name, texts)
                run_level(target, min(32, max(concurrencies)), 64 * processes, 30, processes)  # warm-up
                for concurrency in concurrencies:
                    finish_probe = level_probe(server) if level_probe else None
                    row = {"config": config.label, "register_s": register_s, **level(target, concurrency)}
                    row["worker_peak_rss_mib"] = worker_peak_rss_mib(server)
                    if finish_probe:
                        row.update(finish_probe())
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                unregister(server, config)
    finally:
        if server.stop():
            server.kill()
    return rows


def write_results(rows: list[dict], out: Path, stem: str, title: str) -> None:
    """CSV plus a latency-vs-throughput plot, one line per configuration."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{stem}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 5))
    for label in dict.fromkeys(row["config"] for row in rows):
        points = [row for row in rows if row["config"] == label]
        line = axis.plot([p["throughput_rps"] for p in points], [p["p50_ms"] for p in points], marker="o", label=f"{label} p50")[0]
        axis.plot([p["throughput_rps"] for p in points], [p["p99_ms"] for p in points], marker="x", linestyle="--", color=line.get_color(), label=f"{label} p99")
        for point in points:
            axis.annotate(f"c{point['concurrency']}", (point["throughput_rps"], point["p50_ms"]), fontsize=7)
    axis.set(xlabel="throughput (requests / s)", ylabel="latency (ms)", yscale="log", title=title)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / f"{stem}.png", dpi=110)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--test-csv", type=Path, default=REPO / "artifacts/data/test.csv")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--max-requests", type=int, default=1500, help="per concurrency level")
    parser.add_argument("--max-seconds", type=float, default=60, help="per concurrency level")
    shipped = TorchServeSettings()  # measure what build_mar.py ships unless told otherwise
    parser.add_argument("--batch-size", type=int, default=shipped.batch_size)
    parser.add_argument("--max-batch-delay", type=int, default=shipped.max_batch_delay_ms)
    parser.add_argument("--workers", type=int, default=shipped.min_workers, help="bert_trt's workers (the stock archive gets 1)")
    parser.add_argument("--out", type=Path, default=REPO / "bench_results")
    parser.add_argument("--quick", action="store_true", help="smoke: concurrency 1 and 8, 40 requests each")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.quick:
        args.concurrency, args.max_requests, args.max_seconds = [1, 8], 40, 20

    _, texts = read_labelled_csv(args.test_csv)
    configs = [
        Config("bert_stock", "bert_stock.mar", args.batch_size, args.max_batch_delay, 1),
        # the shipped archive with its prediction cache off: the levels cycle through the same test texts, and
        # cache hits would not be a comparison with the stock handler (bench/gpu_host_path.py measures the cache)
        Config("bert_trt", "bert_trt_nocache.mar", args.batch_size, args.max_batch_delay, args.workers),
    ]
    missing = [c.mar for c in configs if not (args.store / c.mar).is_file()]
    if missing:
        sys.exit(f"missing {missing} in {args.store}: run `make mar bench-mars` first")
    rows = run_configs(args.store, configs, args.concurrency, texts, args.max_requests, args.max_seconds, args.out / "ts_load_test")
    write_results(rows, args.out, "load_test", "TorchServe over HTTP: stock-style baseline vs bert_trt")
    best = {c.label: max((r for r in rows if r["config"] == c.label), key=lambda r: r["throughput_rps"]) for c in configs}
    base, ours = best[configs[0].label], best[configs[1].label]
    single = {r["config"]: r for r in rows if r["concurrency"] == min(args.concurrency)}
    print(f"\nbest throughput: stock {base['throughput_rps']} req/s (c{base['concurrency']}), bert_trt {ours['throughput_rps']} req/s "
          f"(c{ours['concurrency']}): {ours['throughput_rps'] / base['throughput_rps']:.2f}x")  # fmt: skip
    print(f"p99 at concurrency {min(args.concurrency)}: stock {single[configs[0].label]['p99_ms']} ms, bert_trt {single[configs[1].label]['p99_ms']} ms")
    print(f"errors: {sum(r['errors'] for r in rows)}")


if __name__ == "__main__":
    main()
