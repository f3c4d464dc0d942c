"""Ours vs the peers an engineer would pick instead, same model, same load client, same run (CPU).

    make bench-peers                                    # = make bench-mars bench-triton-env, then:
    .venv/bin/python -m bench.peer_comparison [--rounds 2] [--concurrency 1 8 32 128]

Targets, each measured at every concurrency level, in rotating order within each round (so that drift
of a shared VM hits all of them alike):
- ``ours``:   TorchServe + bert_trt.mar (shipped batch settings, ONNX Runtime static int8)
- ``kserve``: the same archive behind our KServe server (`python -m kserve_server`), v2 requests
- ``triton``: Triton 2.51 through PyTriton 0.7 (`bench.triton_peer`): Triton's dynamic batcher in front
              of the same tokenizer and ONNX Runtime session on the same model.int8.onnx, unpacked
              from the same .mar
- ``stock``:  TorchServe + bert_stock.mar (the stock-style handler: eager PyTorch, fp32)
Before loading, one text set is classified by ours and by Triton and the largest |Δp| is reported.
Per level: req/s, p50/p95/p99, errors; per target: resident memory of its processes after the run
and CPU seconds per process group during each level (frontend vs worker). Writes
peer_comparison.csv / .png / .json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import psutil
import requests

from bench.load_test import Config, Target, register, run_level, torchserve_target, write_results
from export.mar import TorchServeSettings
from harness.process import wait_until_ready
from kserve_server.batcher import BatchingSettings
from harness.torchserve import TorchServe, free_port
from training.data import read_labelled_csv

REPO = Path(__file__).resolve().parent.parent
TRITON_PYTHON = REPO / ".venv-triton" / "bin" / "python"
TRITON_MODEL = "bert"


def v2_body(text: str) -> bytes:
    """An Open Inference Protocol (v2) request with one BYTES text."""
    return json.dumps({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}).encode("utf-8")


class V2Server:
    """A server speaking the Open Inference Protocol, started as a subprocess on a free loopback port."""

    def __init__(self, name: str, command: list[str], port: int, model: str, workdir: Path, env: dict[str, str] | None = None):
        self.name, self.command, self.port, self.model, self.workdir = name, command, port, model, workdir
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    @classmethod
    def triton(cls, mar: Path, workdir: Path, max_queue_delay_ms: float) -> "V2Server":
        """`bench.triton_peer` in its own environment, on the archive unpacked into `workdir`."""
        model_dir = workdir / "unpacked_mar"
        with zipfile.ZipFile(mar) as archive:
            archive.extractall(model_dir)
        port = free_port()
        command = [str(TRITON_PYTHON), "-m", "bench.triton_peer", "--model-dir", str(model_dir), "--http-port", str(port),
                   "--grpc-port", str(free_port()), "--metrics-port", str(free_port()), "--max-queue-delay-ms", str(max_queue_delay_ms)]  # fmt: skip
        return cls("triton", command, port, TRITON_MODEL, workdir, {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})

    @classmethod
    def kserve(cls, mar: Path, workdir: Path, max_in_flight: int) -> "V2Server":
        """Our KServe server (`python -m kserve_server`) on the archive."""
        port = free_port()
        command = [sys.executable, "-m", "kserve_server", "--mar", str(mar), "--http-port", str(port), "--model-name", "bert_trt",
                   "--unpack-dir", str(workdir / "kserve_model"), "--max-in-flight", str(max_in_flight), "--no-grpc"]  # fmt: skip
        return cls("kserve", command, port, "bert_trt", workdir)

    def start(self, timeout: float = 240) -> None:
        log = (self.workdir / f"{self.name}.log").open("w")
        self.process = subprocess.Popen(self.command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_ready(self.process, f"http://127.0.0.1:{self.port}/v2/models/{self.model}/ready", self.workdir / f"{self.name}.log", timeout)

    def processes(self) -> list[psutil.Process]:
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]

    def probabilities(self, text: str) -> list[float]:
        response = requests.post(f"http://127.0.0.1:{self.port}/v2/models/{self.model}/infer", data=v2_body(text), headers={"Content-Type": "application/json"}, timeout=30)
        response.raise_for_status()
        return next(output["data"] for output in response.json()["outputs"] if output["name"] == "probabilities")

    def target(self, texts: list[str]) -> Target:
        return Target(self.port, f"/v2/models/{self.model}/infer", {"Content-Type": "application/json"}, [v2_body(text) for text in texts])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)


def worker_processes(server: TorchServe, model: str) -> list[psutil.Process]:
    """The Python worker processes of one registered model (pids from the management API)."""
    return [psutil.Process(worker["pid"]) for worker in server.describe(model)["workers"] if worker.get("pid")]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def resident_mib(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**20, 1)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--test-csv", type=Path, default=REPO / "artifacts/data/test.csv")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-requests", type=int, default=1500, help="per level")
    parser.add_argument("--max-seconds", type=float, default=30, help="per level")
    shipped = TorchServeSettings()
    parser.add_argument("--batch-size", type=int, default=shipped.batch_size)
    parser.add_argument("--max-batch-delay", type=int, default=shipped.max_batch_delay_ms)
    parser.add_argument("--triton-delay-ms", type=float, default=5, help="Triton's max_queue_delay")
    parser.add_argument("--ours-mar", default="bert_trt_nocache.mar",
                        help="archive measured as ours (make bench-mars: the shipped one with its prediction cache off, as the peers have none)")
    parser.add_argument("--ours-workers", type=int, default=shipped.min_workers)
    parser.add_argument("--kserve-in-flight", type=int, default=BatchingSettings.max_in_flight, help="the KServe server's batches computed at once")
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench_results")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if not TRITON_PYTHON.is_file():
        sys.exit("no Triton environment: run `make bench-triton-env`")
    for mar in ("bert_trt.mar", args.ours_mar, "bert_stock.mar"):
        if not (args.store / mar).is_file():
            sys.exit(f"missing {args.store / mar}: run `make mar bench-mars`")

    _, texts = read_labelled_csv(args.test_csv)
    work = args.out / "peer_comparison_work"
    work.mkdir(parents=True, exist_ok=True)
    triton = V2Server.triton(args.store / "bert_trt.mar", work, args.triton_delay_ms)
    kserve = V2Server.kserve(args.store / args.ours_mar, work, args.kserve_in_flight)
    server = TorchServe(workdir=work / "ts", model_store=args.store, models=[], enable_model_api=True)
    rows, summary = [], {}
    try:
        triton.start()
        kserve.start()
        server.start()
        names = ["ours", "kserve", "triton"] + ([] if args.skip_stock else ["stock"])
        register(server, Config("bert_trt", args.ours_mar, args.batch_size, args.max_batch_delay, args.ours_workers))
        if "stock" in names:
            register(server, Config("bert_stock", "bert_stock.mar", args.batch_size, args.max_batch_delay))
        targets = {"ours": torchserve_target(server, "bert_trt", texts), "kserve": kserve.target(texts), "triton": triton.target(texts)}
        if "stock" in names:
            targets["stock"] = torchserve_target(server, "bert_stock", texts)
        frontend = server.running_processes()[:1]
        groups = {
            "ours": {"frontend": frontend, "worker": worker_processes(server, "bert_trt")},
            "stock": {"frontend": frontend, "worker": worker_processes(server, "bert_stock")} if "stock" in names else {},
            "kserve": {"server": kserve.processes()},
            "triton": {"server": triton.processes()},
        }

        sample = texts[:100]
        ours_p = [server.predict(text.encode()).json()["probabilities"] for text in sample]
        for peer in (triton, kserve):
            theirs = [peer.probabilities(text) for text in sample]
            summary[f"max_abs_dp_ours_vs_{peer.name}"] = max(abs(row[label] - other[i]) for row, other in zip(ours_p, theirs) for i, label in enumerate(row))
            print(f"answers, ours vs {peer.name} over {len(sample)} texts: max |dp| = {summary[f'max_abs_dp_ours_vs_{peer.name}']:.2e}", flush=True)

        for name in names:  # warm-up
            run_level(targets[name], 32, 200, 30)
        for round_ in range(args.rounds):
            for concurrency in args.concurrency:
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    before = {group: cpu_seconds(processes) for group, processes in groups[name].items()}
                    row = {"config": name, "round": round_, **run_level(targets[name], concurrency, args.max_requests, args.max_seconds)}
                    for group, processes in groups[name].items():
                        row[f"cpu_cores_{group}"] = round((cpu_seconds(processes) - before[group]) / row["seconds"], 2)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        summary["resident_mib"] = {
            "ours_worker": resident_mib(groups["ours"]["worker"]),
            "torchserve_frontend": resident_mib(frontend),
            "triton_tree": resident_mib(groups["triton"]["server"]),
            "kserve_process": resident_mib(groups["kserve"]["server"]),
            **({"stock_worker": resident_mib(groups["stock"]["worker"])} if "stock" in names else {}),
        }
    finally:
        triton.stop()
        kserve.stop()
        if server.stop():
            server.kill()

    write_results(rows, args.out, "peer_comparison", "ours (TorchServe, KServe) vs Triton (PyTriton) vs stock archive, same client")
    best = {}
    for concurrency in args.concurrency:
        level = {name: max(r["throughput_rps"] for r in rows if r["config"] == name and r["concurrency"] == concurrency) for name in names}
        p50 = {name: min(r["p50_ms"] for r in rows if r["config"] == name and r["concurrency"] == concurrency) for name in names}
        best[concurrency] = {"req_per_s": level, "p50_ms": p50, "ours_over_triton": round(level["ours"] / level["triton"], 2),
                             "kserve_over_triton": round(level["kserve"] / level["triton"], 2)}  # fmt: skip
        if "stock" in names:
            best[concurrency]["ours_over_stock"] = round(level["ours"] / level["stock"], 2)
        print(f"c{concurrency}: " + ", ".join(f"{n} {level[n]} req/s p50 {p50[n]} ms" for n in names) + f"; ours/triton {best[concurrency]['ours_over_triton']}x, kserve/triton {best[concurrency]['kserve_over_triton']}x")
    summary["best_of_rounds"] = best
    summary["errors"] = sum(r["errors"] for r in rows)
    summary["settings"] = {"ours_mar": args.ours_mar, "ours_workers": args.ours_workers, "batch_size": args.batch_size, "max_batch_delay_ms": args.max_batch_delay, "triton_max_queue_delay_ms": args.triton_delay_ms,
                           "rounds": args.rounds, "max_requests": args.max_requests, "cpu_count": os.cpu_count()}  # fmt: skip
    (args.out / "peer_comparison.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["resident_mib"]), f"errors: {summary['errors']}")


if __name__ == "__main__":
    main()
