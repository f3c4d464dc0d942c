"""The host path at GPU speed, measured in one run: tokenizer, handler, TorchServe and the KServe door.

    # on the GPU machine, after `python -m bench.prepare_host_path_bundle` here (docs/gpu-and-tensorrt.md)
    PYTHONPATH=.:/tmp/site python -m bench.gpu_host_path --bundle .carry --stages inprocess kserve --out $OUT
    PYTHONPATH=.:/tmp/site python -m bench.gpu_host_path --bundle .carry --stages torchserve --out $OUT
    # anywhere, seconds long, on the CPU (CI's smoke run)
    python -m bench.gpu_host_path --quick --checkpoint DIR --texts test.csv --out results/

The model has MiniLM-L6's shape with seeded random weights (speed does not depend on them) and the
default model's tokenizer; the texts are the default test split (natural lengths). Stages:

* inprocess: backend `infer` alone on the handler's own padded chunks (batches of 64 texts) vs
  `BertTrtHandler.handle()` on 64 raw requests (bytes in, JSON bytes out, cache off), and the same for the
  archive of `--baseline-tree` (the code before this work, its answers JSON-encoded as TorchServe's worker
  encodes them) with a check that both give the same probabilities; tokenizer µs per text (the fast path,
  the library on one thread and on every core); µs per text per stage; a cProfile of handle();
  the token budget (max_batch_tokens) on natural texts and with one long text per batch; the prediction
  cache on unique and on Zipf-repeated texts.
* torchserve: the baseline archive at its GPU defaults and this archive under several (workers x batchSize
  x maxBatchDelay), driven by `bench/http_load.py`; GPU utilisation sampled during each level.
* kserve: `python -m kserve_server --gpu-id 0 --workers N` for several N.

Writes host_path.json (merged with what an earlier stage of the same --out wrote), host_path_profile.txt
and host_path.csv.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

from bench.http_load import kserve_v1_target, run_http_level
from handler.metrics import MetricsSink
from handler.prediction_cache import PredictionCache
from training.data import read_labelled_csv

BATCH = 64
#: (workers, batchSize, maxBatchDelay ms) tried for this archive on one GPU; the baseline runs its own defaults
TORCHSERVE_CONFIGS = [(4, 64, 1), (4, 128, 1), (4, 128, 2), (6, 128, 2)]
BASELINE_CONFIG = (4, 64, 10)
KSERVE_WORKERS = [1, 2, 4, 8]
BUDGETS = [None, 2048, 4096, 8192]
CACHE_SIZES = [0, 1000, 10000]

#: run by the baseline tree's Python in a subprocess: its handler on the same model dir, texts/s at batch 64
BASELINE_SCRIPT = """
import json, sys, time
from harness.inprocess import started_handler
from ts.context import RequestProcessor
model_dir, texts_file, gpu, passes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
texts = json.load(open(texts_file))
handler, context = started_handler(model_dir, gpu_id=None if gpu == "none" else int(gpu), model_yaml={"minWorkers": 1})
batches = [[{"body": t.encode()} for t in texts[i:i + 64]] for i in range(0, len(texts), 64)]
def run():
    out = []
    for batch in batches:
        context.request_processor = [RequestProcessor({}) for _ in batch]
        responses = handler.handle(batch, context)
        out += [json.dumps(r, indent=2).encode() if not isinstance(r, (bytes, bytearray)) else r for r in responses]  # what TorchServe's worker sends
    return out
run()
seconds = []
for _ in range(passes):
    start = time.perf_counter(); answers = run(); seconds.append(time.perf_counter() - start)
probabilities = [[json.loads(a)["probabilities"][k] for k in sorted(json.loads(a)["probabilities"])] for a in answers]
print(json.dumps({"texts_per_s": len(texts) / sorted(seconds)[len(seconds) // 2], "probabilities": probabilities}))
"""


class StageTimes(MetricsSink):
    """Sums the service's per-batch stage times."""

    def __init__(self):
        self.tokenize_ms = self.infer_ms = self.total_ms = 0.0
        self.texts = 0

    def batch_done(self, record) -> None:
        self.tokenize_ms += record.tokenize_ms
        self.infer_ms += record.infer_ms
        self.total_ms += record.total_ms
        self.texts += record.texts


def batches_of(texts: list[str], size: int = BATCH) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def handle_all(handler, context, batches: list[list[bytes]]) -> list[bytes]:
    """Every batch through handle() as a TorchServe worker calls it; the JSON bytes it returns."""
    from ts.context import RequestProcessor

    answers = []
    for payloads in batches:
        context.request_processor = [RequestProcessor({}) for _ in payloads]
        answers += handler.handle([{"body": payload} for payload in payloads], context)
    return answers


def median_seconds(function, passes: int) -> float:
    function()  # warm: graphs captured, caches of the tokenizer's fast path filled
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tokenizer_figures(tokenizer, texts: list[str], passes: int) -> dict:
    """µs per text: the fast path (what the handler runs), and the library alone on one thread and on every core."""
    batches = batches_of(texts)
    figures = {}
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    figures["tokenize_us_per_text"] = median_seconds(lambda: [tokenizer.encode_texts(b, 128, "head") for b in batches], passes) / len(texts) * 1e6
    library = tokenizer.tokenizer
    figures["library_encode_batch_us_per_text_1_thread"] = median_seconds(lambda: [library.encode_batch(b, add_special_tokens=False) for b in batches], passes) / len(texts) * 1e6
    figures["library_encode_batch_fast_us_per_text_1_thread"] = (
        median_seconds(lambda: [library.encode_batch_fast(b, add_special_tokens=False) for b in batches], passes) / len(texts) * 1e6
    )
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    figures["library_encode_batch_fast_us_per_text_all_cores"] = (
        median_seconds(lambda: [library.encode_batch_fast(b, add_special_tokens=False) for b in batches], passes) / len(texts) * 1e6
    )
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    figures["fast_path_share_of_texts"] = round(sum(tokenizer.fast_path.ids(t) is not None for t in texts) / len(texts), 4) if tokenizer.fast_path else 0.0
    return {key: round(value, 2) for key, value in figures.items()}


def inprocess_stage(model_dir: Path, texts: list[str], gpu_id: int | None, passes: int, baseline_tree: Path | None, work: Path, report: dict) -> None:
    """Backend alone vs handler at batch 64, the baseline handler, tokenizer, split, profile, budget and cache."""
    from harness.inprocess import started_handler

    handler, context = started_handler(model_dir, gpu_id=gpu_id, model_yaml={"minWorkers": 1, "handler": {"response_cache_size": 0}})
    classifier = handler.classifier
    report["backend"] = classifier.backend.describe()
    report["max_batch_tokens_default"] = classifier.max_batch_tokens
    stages = StageTimes()
    handler.service.metrics = stages

    chunks = [list(classifier.chunks(classifier.encode(batch))) for batch in batches_of(texts)]
    infer = lambda: [classifier.backend.infer(inputs) for batch in chunks for _, inputs in batch]  # noqa: E731
    backend_s = median_seconds(infer, passes)
    payloads = [[text.encode() for text in batch] for batch in batches_of(texts)]
    handler_s = median_seconds(lambda: handle_all(handler, context, payloads), passes)
    report["backend_texts_per_s_b64"] = round(len(texts) / backend_s, 1)
    report["handler_texts_per_s_b64"] = round(len(texts) / handler_s, 1)
    report["handler_share_of_backend_b64"] = round(backend_s / handler_s, 3)

    # µs per text and stage, over `passes` fresh passes
    stages.__init__()
    for _ in range(passes):
        handle_all(handler, context, payloads)
    count = stages.texts
    answer_ms = handler_s * 1000 * passes - stages.tokenize_ms - stages.infer_ms
    report["split_us_per_text"] = {
        "tokenize": round(stages.tokenize_ms / count * 1000, 2), "infer": round(stages.infer_ms / count * 1000, 2),
        "parse_and_answer": round(answer_ms / count * 1000, 2),
    }  # fmt: skip
    answers = handle_all(handler, context, payloads)
    ours = np.array([[json.loads(a)["probabilities"][k] for k in sorted(json.loads(a)["probabilities"])] for a in answers])

    from ts.protocol.otf_message_handler import create_predict_response

    def worker_protocol() -> None:
        for batch in payloads:
            from ts.context import RequestProcessor

            context.request_processor = [RequestProcessor({}) for _ in batch]
            create_predict_response(handler.handle([{"body": p} for p in batch], context), {i: str(i) for i in range(len(batch))}, "", 200, context)

    report["handler_plus_worker_protocol_texts_per_s_b64"] = round(len(texts) / median_seconds(worker_protocol, passes), 1)
    profile = cProfile.Profile()
    profile.enable()
    handle_all(handler, context, payloads)
    profile.disable()
    stream = io.StringIO()
    pstats.Stats(profile, stream=stream).sort_stats("tottime").print_stats(30)
    report["profile_text"] = (
        f"handle() on {len(texts)} requests in batches of {BATCH} ({report['backend']['backend']}), cache off: "
        f"{handler_s / len(texts) * 1e6:.1f} µs per request without the profiler\n" + stream.getvalue()
    )

    report.update(tokenizer_figures(classifier.tokenizer, texts, passes))

    # token budget: natural texts, and one long text (max_length tokens) in every batch of 64
    long_text = " ".join(texts[:40])
    mixed = [long_text if i % BATCH == BATCH // 2 else text for i, text in enumerate(texts)]
    budget_rows = []
    for budget in BUDGETS:
        classifier.max_batch_tokens = budget
        for name, workload in (("natural", texts), ("one_long_per_batch", mixed)):
            batches = [[text.encode() for text in batch] for batch in batches_of(workload)]
            seconds = median_seconds(lambda: handle_all(handler, context, batches), passes)
            budget_rows.append({"max_batch_tokens": budget, "workload": name, "texts_per_s": round(len(workload) / seconds, 1),
                                "ms_per_batch": round(seconds / len(batches) * 1000, 3)})  # fmt: skip
    classifier.max_batch_tokens = report["max_batch_tokens_default"]
    report["token_budget"] = budget_rows

    # prediction cache: every text new (a fresh cache per pass), and Zipf-repeated texts
    rng = random.Random(0)
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(texts))]
    zipf = rng.choices(texts, weights, k=len(texts) * 4)
    cache_rows = []
    for size in CACHE_SIZES:
        for name, workload in (("unique", texts), ("zipf_1.1", zipf)):
            batches = [[text.encode() for text in batch] for batch in batches_of(workload)]

            def run() -> None:
                handler.service.cache = PredictionCache(size)
                handle_all(handler, context, batches)

            seconds = median_seconds(run, passes)
            cache_rows.append({"cache_size": size, "workload": name, "texts_per_s": round(len(workload) / seconds, 1)})
    handler.service.cache = PredictionCache(0)
    distinct = len(set(zipf))
    report["cache"] = {"rows": cache_rows, "zipf_distinct_share": round(distinct / len(zipf), 3)}

    if baseline_tree:
        texts_file = work / "texts.json"
        texts_file.write_text(json.dumps(texts))
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(baseline_tree), *os.environ.get("PYTHONPATH", "").split(os.pathsep)[1:]])}
        result = subprocess.run([sys.executable, "-c", BASELINE_SCRIPT, str(model_dir), str(texts_file), "none" if gpu_id is None else str(gpu_id), str(passes)],
                                capture_output=True, text=True, env=environment, cwd=baseline_tree, timeout=600)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"baseline handler failed: {result.stderr[-2000:]}")
        baseline = json.loads(result.stdout.strip().splitlines()[-1])
        report["handler_texts_per_s_b64_baseline_same_run"] = round(baseline["texts_per_s"], 1)
        report["handler_speedup_vs_baseline"] = round(report["handler_texts_per_s_b64"] / baseline["texts_per_s"], 2)
        report["max_abs_dp_vs_baseline"] = float(np.abs(ours - np.array(baseline["probabilities"])).max())
    handler.service.close()


def build_archives(checkpoint: Path, store: Path, baseline_tree: Path | None, target: str) -> dict[str, str]:
    """This code's archive (and the baseline tree's, built by its own build_mar.py) in `store`."""
    import build_mar
    from export.mar import build_mar as build_archive

    # the prediction cache off: a benchmark cycling through the test texts would otherwise measure cache hits
    # (the cache has its own figures in the in-process stage); the baseline has no cache
    build_archive(build_mar.parse_args(["--checkpoint", str(checkpoint), "--out", str(store), "--model-name", "bert_trt", "--target", target,
                                        "--response-cache-size", "0"]))  # fmt: skip
    archives = {"ours": "bert_trt.mar"}
    if baseline_tree:
        command = [sys.executable, "build_mar.py", "--checkpoint", str(checkpoint), "--out", str(store), "--model-name", "baseline", "--target", target]
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(baseline_tree), *os.environ.get("PYTHONPATH", "").split(os.pathsep)[1:]])}
        subprocess.run(command, cwd=baseline_tree, env=environment, check=True, timeout=600)
        archives["baseline"] = "baseline.mar"
    return archives


def gpu_sampler(gpu: bool):
    """nvidia-smi sampling during a level (bench/gpu_torchserve.py), or nothing on a CPU run."""
    if not gpu:
        return None
    from bench.gpu_torchserve import GpuSampler

    return GpuSampler(0.25)


def torchserve_stage(store: Path, archives: dict[str, str], texts: list[str], gpu: bool, seconds: float, concurrency: list[int], processes: int,
                     configs: list[tuple[int, int, int]], work: Path, report: dict) -> None:  # fmt: skip
    """Each archive x config on one TorchServe: c1 latency and the best throughput over `concurrency`."""
    from bench.gpu_torchserve import cpu_seconds
    from bench.load_test import Config, run_configs

    plan = [Config("baseline", archives["baseline"], BASELINE_CONFIG[1], BASELINE_CONFIG[2], BASELINE_CONFIG[0])] if "baseline" in archives else []
    plan += [Config("ours", archives["ours"], batch_size, delay, workers) for workers, batch_size, delay in configs]

    def costs(server):
        """CPU cores of the frontend and the workers, backend busy share and GPU use during one level."""
        sampler, cpu_before, infer_before = gpu_sampler(gpu), cpu_seconds(server), backend_busy_ms(server.log_dir / "model_log.log")

        def finish() -> dict:
            cpu_after = cpu_seconds(server)
            wall = cpu_after["wall"] - cpu_before["wall"]
            extra = {
                "cores_frontend": round((cpu_after["frontend"] - cpu_before["frontend"]) / wall, 2),
                "cores_workers": round((cpu_after["workers"] - cpu_before["workers"]) / wall, 2),
                "backend_busy_pct": round((backend_busy_ms(server.log_dir / "model_log.log") - infer_before) / 10 / wall, 1),
            }  # fmt: skip
            return extra | (sampler.stop() if sampler else {})

        return finish

    level = lambda target, concurrency: run_http_level(target, concurrency, seconds, 1 if concurrency == 1 else processes)  # noqa: E731
    rows = run_configs(store, plan, [1, *concurrency], texts, 0, seconds, work / "ts", processes, {"metrics_mode": "prometheus"}, costs, level)
    for row in rows:
        row["archive"] = row["config"].split()[0]
    report["torchserve_rows"] = rows
    loaded = [row for row in rows if row["concurrency"] > 1]
    ours = [row for row in loaded if row["archive"] == "ours"]
    best = max(ours, key=lambda row: row["throughput_rps"])
    report["torchserve_rps_best"] = best["throughput_rps"]
    report["torchserve_best_config"] = best["config"]
    report["gpu_util_pct_at_best"] = best.get("gpu0_util_pct_avg")
    report["backend_busy_pct_at_best"] = best.get("backend_busy_pct")
    report["p50_ms_c1_torchserve"] = min(row["p50_ms"] for row in rows if row["archive"] == "ours" and row["concurrency"] == 1 and row["config"] == best["config"])
    baseline = [row for row in loaded if row["archive"] == "baseline"]
    if baseline:
        report["torchserve_rps_baseline_same_run"] = max(row["throughput_rps"] for row in baseline)
        report["torchserve_speedup_vs_baseline"] = round(best["throughput_rps"] / report["torchserve_rps_baseline_same_run"], 2)
        report["p50_ms_c1_torchserve_baseline"] = min(row["p50_ms"] for row in rows if row["archive"] == "baseline" and row["concurrency"] == 1)


def backend_busy_ms(model_log: Path) -> float:
    """Milliseconds the workers' backends have spent in `infer` so far (the service's per-batch log lines)."""
    import re

    if not model_log.is_file():
        return 0.0
    return sum(float(ms) for ms in re.findall(r"batch: \d+ requests, .*?\(infer ([0-9.]+) ms\)", model_log.read_text(errors="replace")))


def kserve_stage(mar: Path, texts: list[str], gpu: bool, seconds: float, concurrency: list[int], processes: int, worker_counts: list[int], work: Path, report: dict) -> None:
    """`python -m kserve_server --workers N` (on GPU 0 when `gpu`): best throughput per N."""
    from harness.kserve import running_kserve

    rows = []
    for workers in worker_counts:
        extra = ("--workers", str(workers), *(("--gpu-id", "0") if gpu else ()))
        with running_kserve(mar, work / f"kserve_w{workers}", grpc=False, extra=extra, timeout=300) as server:
            port = int(server.http_url.rsplit(":", 1)[1])
            wait_for_workers(server.http_url, workers)
            target = kserve_v1_target(port, "bert_trt", texts)
            run_http_level(target, min(64, max(concurrency)), 1.0, processes)
            for level in [1, *concurrency]:
                sampler = gpu_sampler(gpu)
                row = {"workers": workers, **run_http_level(target, level, seconds, 1 if level == 1 else processes)}
                if sampler:
                    row.update(sampler.stop())
                rows.append(row)
                print(json.dumps(row), flush=True)
    report["kserve_rows"] = rows
    best = max(rows, key=lambda row: row["throughput_rps"])
    report["p50_ms_c1_kserve"] = min(row["p50_ms"] for row in rows if row["concurrency"] == 1)
    report["kserve_rps_best"] = best["throughput_rps"]
    report["kserve_best_workers"] = best["workers"]
    report["kserve_gpu_util_pct_at_best"] = best.get("gpu0_util_pct_avg")


def wait_for_workers(url: str, count: int, timeout: float = 300) -> None:
    """Until /metrics shows `count` live worker processes (one process: until it answers)."""
    import re

    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = requests.get(f"{url}/metrics", timeout=10).text
        if count == 1 or len(set(re.findall(r'bert_trt_active_backend\{[^}]*pid="(\d+)"', text))) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"only some of {count} KServe workers came up within {timeout} s")


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="what prepare_host_path_bundle wrote (tokenizer/, test.csv, baseline/)")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint to serve as it is (the CPU smoke run's tiny model)")
    parser.add_argument("--texts", type=Path, help="a label,txt CSV (default: the bundle's test.csv)")
    parser.add_argument("--baseline-tree", type=Path, help="the code to compare with (default: the bundle's baseline/)")
    parser.add_argument("--stages", nargs="+", choices=["inprocess", "torchserve", "kserve"], default=["inprocess", "torchserve", "kserve"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/host_path"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_results")))
    parser.add_argument("--quick", action="store_true", help="CPU, 128 texts, one pass, 1-s levels (a smoke run)")
    parser.add_argument("--kserve-workers", type=int, nargs="+", help=f"server processes to try (default {KSERVE_WORKERS})")
    parser.add_argument("--torchserve-configs", nargs="+", help="workers x batchSize x maxBatchDelay to try, e.g. 4x64x1")
    parser.add_argument("--concurrency", type=int, nargs="+", help="loaded levels (default 256 512 768; c1 always runs)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    import torch

    gpu = torch.cuda.is_available() and not args.quick
    texts_csv = args.texts or (args.bundle / "test.csv")
    _, texts = read_labelled_csv(texts_csv)
    baseline_tree = args.baseline_tree or (args.bundle / "baseline" if args.bundle and (args.bundle / "baseline").is_dir() else None)
    passes, seconds, concurrency, processes = (1, 1.0, [16], 1) if args.quick else (5, 5.0, [256, 512, 768], 4)
    if args.quick:
        texts = texts[:128]
    concurrency = args.concurrency or concurrency
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        checkpoint = args.checkpoint
    else:
        from bench.gpu_torchserve import make_model

        checkpoint = make_model(args.bundle / "tokenizer", work / "checkpoint", "minilm", 128)
    from handler.spec import ModelSpec
    from harness.models import model_dir_like_mar

    model_dir = model_dir_like_mar(checkpoint, work / "no_export", work / "inprocess")
    ModelSpec.from_checkpoint(checkpoint, 128).save(model_dir)

    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / "host_path.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report.update({"gpu": torch.cuda.get_device_name(0) if gpu else "cpu", "cores": os.cpu_count(), "texts": len(texts), "batch": BATCH})
    if "inprocess" in args.stages:
        inprocess_stage(model_dir, texts, 0 if gpu else None, passes, baseline_tree, work, report)
        (args.out / "host_path_profile.txt").write_text(report.pop("profile_text"))
    store = work / "model_store"
    if {"torchserve", "kserve"} & set(args.stages):
        archives = build_archives(checkpoint, store, baseline_tree if "torchserve" in args.stages else None, "gpu" if gpu else "cpu")
    if "torchserve" in args.stages:
        configs = [tuple(int(part) for part in config.split("x")) for config in args.torchserve_configs] if args.torchserve_configs else None
        configs = configs or ([(1, 16, 1)] if args.quick else TORCHSERVE_CONFIGS)
        torchserve_stage(store, archives, texts, gpu, seconds, concurrency, processes, configs, work, report)
    if "kserve" in args.stages:
        workers = args.kserve_workers or ([1, 2] if args.quick else KSERVE_WORKERS)
        kserve_stage(store / archives["ours"], texts, gpu, seconds, concurrency, processes, workers, work, report)
    report_path.write_text(json.dumps(report, indent=1))
    rows = [{"stage": "torchserve", **row} for row in report.get("torchserve_rows", [])] + [{"stage": "kserve", **row} for row in report.get("kserve_rows", [])]
    if rows:
        columns = sorted({key for row in rows for key in row}, key=lambda key: (key != "stage", key))
        with (args.out / "host_path.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
    print(json.dumps({key: value for key, value in report.items() if not key.endswith("_rows")}, indent=1))


if __name__ == "__main__":
    main()
