"""On a GPU machine: bert_trt through TorchServe over HTTP vs the same backend in-process.

    PYTHONPATH=.:.carry/site python -m bench.gpu_torchserve --tokenizer DIR --texts test.csv --out results/

The model has MiniLM-L6's shape (6 x 384) or, with --shape bert-base, BERT-base's (12 x 768), with
random weights (speed does not depend on them); the texts are the default test split, or with
--long-texts, test texts joined until each fills --max-length tokens (a GPU-bound load). While each
level runs, nvidia-smi is sampled: GPU utilization and memory per GPU go into the row. For each configuration (workers x batchSize x
maxBatchDelay) one .mar is registered on a TorchServe started with the shipped config
(metrics_mode=prometheus, to read the frontend's queue / inference latency counters) and loaded
by several client processes. The in-process figure is BertTrtHandler.handle() in one process on
the same texts in batches of 32. Writes gpu_torchserve.json/.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

import requests
import torch

REPO = Path(__file__).resolve().parent.parent

from bench.gpu_inprocess import run_handler
from bench.load_test import Config, run_configs
from training.data import read_labelled_csv
from harness.inprocess import started_handler
from harness.torchserve import TorchServe

CONFIGS = [(1, 32, 5), (2, 64, 10), (4, 64, 10), (8, 64, 10)]  # workers, batchSize, maxBatchDelay
COUNTER = re.compile(r"^(ts_inference_requests_total|ts_queue_latency_microseconds|ts_inference_latency_microseconds)\{[^}]*model_name=\"(\w+)\"[^}]*\} ([0-9.eE+]+)", re.M)


SHAPES = {
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "bert-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}


def make_model(tokenizer_dir: Path, out: Path, shape: str = "minilm", max_length: int = 128) -> Path:
    """A classifier of the given shape with seeded random weights."""
    from harness.models import random_bert_checkpoint

    return random_bert_checkpoint(out, tokenizer_dir, max_position_embeddings=max(512, max_length), **SHAPES[shape])


def long_texts(texts: list[str], tokens: int, count: int = 2000) -> list[str]:
    """`count` texts, each test texts joined until it has about `tokens` words (so it is cut at max_length)."""
    joined, current = [], []
    index = 0
    while len(joined) < count:
        current.append(texts[index % len(texts)])
        index += 1
        if sum(len(text.split()) for text in current) >= tokens:
            joined.append(" ".join(current))
            current = []
    return joined


class GpuSampler:
    """Samples nvidia-smi (utilization %, memory MiB per GPU) every `interval` s in a thread until `stop`."""

    def __init__(self, interval: float = 0.5):
        import subprocess
        import threading

        self.samples: list[list[tuple[int, float, float]]] = []
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.is_set():
                query = subprocess.run(["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                                       capture_output=True, text=True)  # fmt: skip
                rows = [line.split(",") for line in query.stdout.splitlines() if line.strip()]
                self.samples.append([(int(i), float(util), float(mem)) for i, util, mem in rows])
                self._stop.wait(interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(10)
        summary = {}
        for gpu in sorted({i for sample in self.samples for i, _, _ in sample}):
            utils = [util for sample in self.samples for i, util, _ in sample if i == gpu]
            memory = [mem for sample in self.samples for i, _, mem in sample if i == gpu]
            summary[f"gpu{gpu}_util_pct_avg"] = round(sum(utils) / len(utils), 1)
            summary[f"gpu{gpu}_memory_mib_max"] = round(max(memory))
        return summary


def counters(server: TorchServe) -> dict[str, float]:
    text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text  # the metrics port takes no token
    totals: dict[str, float] = {}
    for name, _, value in COUNTER.findall(text):
        totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def handler_batches(server: TorchServe) -> list[tuple[int, float]]:
    log = (server.log_dir / "model_log.log").read_text(errors="replace")
    return [(int(n), float(ms)) for n, ms in re.findall(r"batch: (\d+) requests, \d+ texts, \d+ rejected, ([0-9.]+) ms", log)]


def cpu_seconds(server: TorchServe) -> dict[str, float]:
    """CPU seconds used so far by the frontend (Java), by its workers, and by the whole machine."""
    import psutil

    frontend = psutil.Process(int(server.pid_file.read_text()))
    used = lambda process: process.cpu_times().user + process.cpu_times().system  # noqa: E731
    machine = psutil.cpu_times()
    return {
        "frontend": used(frontend),
        "workers": sum(used(worker) for worker in frontend.children(recursive=True)),
        "machine": machine.user + machine.system + machine.nice + machine.softirq + machine.irq,
        "wall": time.perf_counter(),
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--texts", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_results")))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--client-processes", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=30000)
    parser.add_argument("--max-seconds", type=float, default=12)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_ts"), help="scratch folder (models, archives, TorchServe's logs)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="minilm")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text the archive keeps")
    parser.add_argument("--long-texts", action="store_true", help="texts of about --max-length tokens each (GPU-bound)")
    parser.add_argument("--skip-inprocess", action="store_true")
    parser.add_argument("--configs", nargs="+", default=[f"{w}x{b}x{d}" for w, b, d in CONFIGS], help="workers x batchSize x maxBatchDelay, e.g. 4x64x10")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    import build_mar
    from export.mar import build_mar as build_archive

    _, texts = read_labelled_csv(args.texts)
    if args.long_texts:
        texts = long_texts(texts, args.max_length)
    work = args.work
    checkpoint = make_model(args.tokenizer, work / "checkpoint", args.shape, args.max_length)
    store = work / "model_store"
    chosen = [tuple(int(part) for part in config.split("x")) for config in args.configs]
    for workers in sorted({w for w, _, _ in chosen}):
        build_archive(build_mar.parse_args(["--checkpoint", str(checkpoint), "--out", str(store), "--model-name", f"bert_trt_w{workers}",
                                                  "--min-workers", str(workers), "--max-workers", str(workers), "--max-length", str(args.max_length)]))  # fmt: skip

    # in-process, same backend, one process: the reference for "what the frontend costs"
    from harness.models import model_dir_like_mar

    model_dir = model_dir_like_mar(checkpoint.parent / "checkpoint", work, work / "inprocess")
    from handler.spec import ModelSpec

    ModelSpec.from_checkpoint(checkpoint, args.max_length).save(model_dir)
    inprocess = {"texts_per_s": float("nan")}
    if not args.skip_inprocess:
        handler, context = started_handler(model_dir, gpu_id=0, model_yaml={"minWorkers": 1})
        run_handler(handler, context, texts[:512])
        passes = [len(texts) / (sum(run_handler(handler, context, texts)[1]) / 1000) for _ in range(3)]
        inprocess = {"backend": handler.classifier.backend.name, "texts_per_s": round(statistics.median(passes), 1), "passes": [round(p, 1) for p in passes]}
        print(json.dumps({"inprocess": inprocess}), flush=True)
        del handler, context
        torch.cuda.empty_cache()

    def frontend_costs(server: TorchServe):
        before, batches_before, cpu_before = counters(server), len(handler_batches(server)), cpu_seconds(server)
        sampler = GpuSampler()

        def finish() -> dict:
            after, batches, cpu_after = counters(server), handler_batches(server)[batches_before:], cpu_seconds(server)
            gpus = sampler.stop()
            cores = {name: (cpu_after[name] - cpu_before[name]) / (cpu_after["wall"] - cpu_before["wall"]) for name in ("frontend", "workers", "machine")}
            served = max(1.0, after.get("ts_inference_requests_total", 0.0) - before.get("ts_inference_requests_total", 0.0))
            extra = {
                name: round((after.get(counter, 0.0) - before.get(counter, 0.0)) / served / 1000, 3)
                for name, counter in (("frontend_queue_ms_avg", "ts_queue_latency_microseconds"), ("frontend_inference_ms_avg", "ts_inference_latency_microseconds"))
            }
            # CPU cores busy during the level: the rest of the machine is mostly the load-generating clients
            extra |= {"cores_frontend": round(cores["frontend"], 1), "cores_workers": round(cores["workers"], 1),
                      "cores_rest": round(cores["machine"] - cores["frontend"] - cores["workers"], 1)}  # fmt: skip
            extra |= gpus
            if batches:
                extra["handler_batch_ms_avg"] = round(sum(ms for _, ms in batches) / len(batches), 3)
                extra["batch_size_avg"] = round(sum(n for n, _ in batches) / len(batches), 1)
            return extra

        return finish

    configs = [Config(f"bert_trt_w{w}", f"bert_trt_w{w}.mar", batch, delay, w) for w, batch, delay in chosen]
    rows = run_configs(store, configs, args.concurrency, texts, args.max_requests, args.max_seconds, work / "ts",
                       processes=args.client_processes, overrides={"metrics_mode": "prometheus"}, level_probe=frontend_costs)  # fmt: skip
    for row in rows:
        row["ratio_to_inprocess"] = round(row["throughput_rps"] / inprocess["texts_per_s"], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    placement = workers_per_gpu(work / "ts" / "logs" / "model_log.log")
    print(json.dumps({"workers_per_gpu": placement}), flush=True)
    report = {"shape": args.shape, "max_length": args.max_length, "long_texts": args.long_texts, "inprocess": inprocess, "rows": rows, "gpu": torch.cuda.get_device_name(0), "gpus_visible": torch.cuda.device_count(), "workers_per_gpu": placement}
    (args.out / "gpu_torchserve.json").write_text(json.dumps(report, indent=1))


def workers_per_gpu(model_log: Path) -> dict[str, int]:
    """How many workers came up on each GPU (from the handler's "bert_trt ready" log lines)."""
    counts: dict[str, int] = {}
    if model_log.is_file():
        for gpu in re.findall(r"bert_trt ready: \{'backend': 'torch_cuda', 'gpu_id': (\d+)", model_log.read_text(errors="replace")):
            counts[gpu] = counts.get(gpu, 0) + 1
    return counts


if __name__ == "__main__":
    main()
