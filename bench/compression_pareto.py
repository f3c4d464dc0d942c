"""Compressed students against the teacher they came from: accuracy vs speed, served as the archives serve them.

    .venv/bin/python -m bench.compression_pareto --teacher artifacts/default/checkpoint \\
        --students artifacts/students/l3 artifacts/students/l2 --out bench/results/cpu_2core
    .venv/bin/python -m bench.compression_pareto ... --quick     # seconds-long smoke (CI, tiny models)

One run measures, on the same machine in the same minutes:
- ``stock``:        the stock-style archive built from the teacher (bench/stock_handler.py: eager fp32 PyTorch);
- ``teacher/fp32``: the teacher with its fp32 ONNX (onnxruntime backend): the accuracy reference;
- ``default``:      today's default archive, the teacher as `make mar` builds it (static int8 ONNX, onnxruntime);
- ``<student>/fp32`` and ``<student>/int8``: each student (training.compress output, or any checkpoint)
  built the same way with model.onnx (`build_mar.py --no-onnx-int8`) or model.int8.onnx.
Every archive has its prediction cache off (`build_mar.py --response-cache-size 0`: the load cycles through the same texts).

Exports (export.onnx_export + the int8 of export.quantize, with its accuracy gate on --evaluation) and archives
(build_mar.py) are made under --work; a student whose int8 the gate refuses gets a "refused" int8 row (and one
whose export or registration fails a "failed" row) and the run goes on. Then:
1. in-process, through the real handler of each unpacked archive (the TorchServe worker's code path): accuracy
   and macro-F1 on the test CSV, texts/s in batches of 32, and batch invariance (max |Δp| of a text alone vs
   inside its batch of 32 mixed texts);
2. one TorchServe: each archive registered alone with the shipped batching and workers (export.mar's
   TorchServeSettings, which its model-config.yaml also carries: TorchServe 0.12 starts minWorkers workers
   whatever initial_workers says, so the stock archive runs as many as the others; the column "workers" is
   what the management API reported), warmed up, loaded by the same client at one concurrency, unregistered;
   --rounds rounds, each in a rotated order; req/s, p50 and p99 are medians over the rounds.
Writes compression_pareto.csv / .png and compression.json (the recommended student: the fastest int8 student
through TorchServe within --budget-points of the teacher's fp32 accuracy) under --out; prints the table.

Columns of compression_pareto.csv (one row per archive; empty where it does not apply):
  variant, role, precision, status      row name; stock / teacher / default / student; fp32 / int8; ok, refused: ..., failed: ...
  checkpoint, backend                   the checkpoint packed; the backend that answered in-process
  layers, intermediate_size, parameters the checkpoint's config.json and weight count (model.safetensors)
  onnx_mib                              size of the ONNX file the archive serves
  training_seconds, distillation_steps, kept_layers   from config.json's compression record (students of training.compress)
  test_texts, accuracy, macro_f1        on --test-csv, through the archive's own handler in-process
  accuracy_delta_points, macro_f1_delta_points        100 x (this - teacher/fp32); negative: worse
  texts_per_s, batch_p50_ms, batch_p99_ms             in-process, batches of 32 (bench/inprocess_cpu.py's measure)
  inprocess_speedup_vs_default_archive  texts_per_s / the default archive's
  batch_invariance_max_abs              largest |Δp| of a text alone vs inside its batch of 32 (over --invariance-texts texts)
  workers, concurrency                  TorchServe workers the model ran with; client threads of the level
  requests_per_s, p50_ms, p99_ms        through TorchServe, median over the rounds (requests_per_s_rounds: each round's)
  errors                                non-200 answers, all rounds
  speedup_vs_default_archive, speedup_vs_stock        requests_per_s / the default archive's (stock's), same run
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

import build_mar
from bench.inprocess_cpu import batch_invariance, batches, measure, stock_predict
from bench.load_test import Config, register, run_level, torchserve_target, unregister
from export.mar import TorchServeSettings, build_mar as build_archive
from export.onnx_export import check_onnx_parity, onnx_from_checkpoint, parity_inputs
from export.quantize import DEFAULT_CALIBRATION_TEXTS, QuantizationBudgetError, quantize_from_args
from handler import layout
from handler.errors import ExportError
from handler.spec import ModelSpec
from harness.inprocess import handle_batch, started_handler
from harness.torchserve import TorchServe
from training.data import read_labelled_csv
from training.train import classification_scores

STOCK_HANDLER = REPO / "bench" / "stock_handler.py"
#: the default goal of a compressed student: twice the default archive's req/s within half an accuracy point
GOAL_SPEEDUP = 2.0
BUDGET_POINTS = 0.5
#: what a run writes under --work (only these are removed: --work may be a folder that holds other things)
WORK_PARTS = ("exports", "model_store", "unpacked", "torchserve")


@dataclass
class Variant:
    """One archive measured here: what it serves, where its files are, and what was measured."""

    label: str
    #: "stock", "teacher", "default" or "student"
    role: str
    #: "fp32" or "int8" (the stock archive: "fp32")
    precision: str
    checkpoint: Path
    export_dir: Path | None
    #: the TorchServe model name (also the .mar's stem)
    model_name: str
    #: None: measured; else why not, starting "refused:" (the int8 gate) or "failed:" (export, TorchServe)
    problem: str | None = None
    row: dict = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)

    @property
    def onnx_file(self) -> Path | None:
        if self.role == "stock" or self.export_dir is None:
            return None
        return self.export_dir / (layout.INT8_ONNX_FILE if self.precision == "int8" else layout.ONNX_FILE)


def model_shape(checkpoint: Path) -> dict:
    """Layers, FFN width and weight count of a checkpoint (weights counted from model.safetensors' header)."""
    config = json.loads((checkpoint / "config.json").read_text())
    layers = config.get("num_hidden_layers", config.get("n_layers"))
    intermediate = config.get("intermediate_size", config.get("hidden_dim"))
    parameters = None
    weights = checkpoint / "model.safetensors"
    if weights.is_file():
        with weights.open("rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        parameters = 0
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for size in tensor["shape"]:
                    count *= size
                parameters += count
    return {"layers": layers, "intermediate_size": intermediate, "parameters": parameters}


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "model"


def export_model(checkpoint: Path, out_dir: Path, args: argparse.Namespace, max_length: int | None) -> str | None:
    """What `python -m export.onnx_export --checkpoint C --out-dir O --int8` does (same functions, same gate);
    returns None, or why there is no model.int8.onnx ("refused: ...": the gate refused it)."""
    onnx_path, spec = onnx_from_checkpoint(checkpoint, out_dir, max_length)
    texts, pairs = parity_inputs(args.parity_texts, spec.text_pair)
    print(f"{checkpoint}: {check_onnx_parity(onnx_path, checkpoint, texts, pairs=pairs).summary()}", flush=True)
    quantization = argparse.Namespace(calibration=args.calibration, calibration_texts=args.calibration_texts, evaluation=args.evaluation,
                                      budget_points=args.int8_budget_points)  # fmt: skip
    try:
        quantize_from_args(onnx_path, checkpoint, quantization)
    except QuantizationBudgetError as refusal:
        print(f"{checkpoint}: int8 refused: {refusal}", flush=True)
        return f"refused: the export's int8 gate: {refusal}"
    return None


def build(variant: Variant, store: Path) -> Path:
    """The variant's archive, built by build_mar.py's command line (cache off; fp32 students without the int8 file)."""
    argv = ["--checkpoint", str(variant.checkpoint), "--model-name", variant.model_name, "--out", str(store)]
    if variant.role == "stock":
        argv += ["--handler", str(STOCK_HANDLER)]
    else:
        argv += ["--export-dir", str(variant.export_dir), "--response-cache-size", "0"]
        if variant.precision == "fp32":
            argv.append("--no-onnx-int8")
    return build_archive(build_mar.parse_args(argv))


def unpacked(mar: Path, target: Path) -> Path:
    """The archive unpacked as TorchServe unpacks it for a worker."""
    shutil.rmtree(target, ignore_errors=True)
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(target)
    return target


def measure_in_process(variant: Variant, model_dir: Path, gold: list[str], texts: list[str], speed_texts: list[str], invariance_texts: int) -> dict:
    """Accuracy, macro-F1, texts/s and batch invariance through the handler of the unpacked archive."""
    if variant.role == "stock":
        predict = stock_predict(model_dir)
        labels, classifier, service = None, None, None
    else:
        handler, context = started_handler(model_dir)
        service, classifier = handler.service, handler.classifier
        labels = list(classifier.labels)

        def predict(batch: list[str]) -> list[str]:
            responses, _ = handle_batch(handler, context, [text.encode("utf-8") for text in batch])
            return [response["label"] for response in responses]

    predicted = [label for batch in batches(texts) for label in predict(batch)]
    names = labels or sorted(set(gold) | set(predicted))
    index = {name: i for i, name in enumerate(names)}
    scores = classification_scores([index.get(g, -1) for g in gold], [index.get(p, -2) for p in predicted], len(names))
    row = {"accuracy": round(scores["accuracy"], 4), "macro_f1": round(scores["macro_f1"], 4), "test_texts": len(texts), **measure(predict, speed_texts)}
    row["backend"] = "torch eager (stock handler)" if service is None else service.backend_name
    row["batch_invariance_max_abs"] = None if classifier is None else float(f"{batch_invariance(classifier, speed_texts, invariance_texts):.3g}")
    if service is not None:
        service.close()
    return row


def serve_rounds(variants: list[Variant], store: Path, work: Path, texts: list[str], args: argparse.Namespace) -> None:
    """One TorchServe; per round, each archive alone (rotated order): register, warm up, one level, unregister."""
    shipped = TorchServeSettings()
    workdir = torchserve_dir(work)
    server = TorchServe(workdir=workdir, model_store=store, models=[], enable_model_api=True)
    try:
        up = time.perf_counter()
        server.start()
        print(f"TorchServe up in {time.perf_counter() - up:.1f} s", flush=True)
        for round_ in range(args.rounds):
            shift = round_ % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                if variant.problem:  # TorchServe did not start it in an earlier round
                    continue
                config = Config(variant.model_name, f"{variant.model_name}.mar", shipped.batch_size, shipped.max_batch_delay_ms, shipped.min_workers)
                started = time.perf_counter()
                try:
                    register(server, config)
                except RuntimeError as failure:
                    variant.problem = "failed: TorchServe did not start its workers"
                    print(f"{variant.label}: {failure}\n{server.log_tail(lines=15)}", flush=True)
                    continue
                register_s = round(time.perf_counter() - started, 1)
                try:
                    variant.row["workers"] = len(server.describe(variant.model_name)["workers"])
                    target = torchserve_target(server, variant.model_name, texts)
                    run_level(target, args.concurrency, args.warmup_requests, args.max_seconds)
                    level = {"round": round_, "register_s": register_s, **run_level(target, args.concurrency, args.max_requests, args.max_seconds)}
                finally:
                    unregister(server, config)
                variant.rounds.append(level)
                print(json.dumps({"variant": variant.label, **level}), flush=True)
    finally:
        if server.stop():
            server.kill()
        if not workdir.is_relative_to(work.resolve()) and not args.keep_work:
            shutil.rmtree(workdir, ignore_errors=True)


def torchserve_dir(work: Path) -> Path:
    """TorchServe's work dir: under `work`, unless its workers' Unix sockets (tmp/.ts.sock.PORT) would pass the
    107-byte limit of a socket path there (the workers then fail to start): a short temporary folder instead."""
    wanted = work.resolve() / "torchserve"
    if len(str(wanted / "tmp" / ".ts.sock.65535")) <= 100:
        return wanted
    short = Path(tempfile.mkdtemp(prefix="pareto_ts_"))
    print(f"note: TorchServe runs in {short} ({wanted} is too long a path for its worker sockets)", flush=True)
    return short


def median_of(levels: list[dict], key: str) -> float | None:
    return round(statistics.median(level[key] for level in levels), 2) if levels else None


def ratio(numerator, denominator) -> float | None:
    return round(numerator / denominator, 2) if numerator and denominator else None


def points(value, reference) -> float | None:
    return None if value is None or reference is None else round(100 * (value - reference), 2)


COLUMNS = [
    "variant", "role", "precision", "status", "checkpoint", "backend", "layers", "intermediate_size", "parameters", "onnx_mib",
    "training_seconds", "distillation_steps", "kept_layers", "test_texts", "accuracy", "macro_f1", "accuracy_delta_points",
    "macro_f1_delta_points", "texts_per_s", "batch_p50_ms", "batch_p99_ms", "inprocess_speedup_vs_default_archive",
    "batch_invariance_max_abs", "workers", "concurrency", "requests_per_s", "requests_per_s_rounds", "p50_ms", "p99_ms", "errors",
    "speedup_vs_default_archive", "speedup_vs_stock",
]  # fmt: skip


def table_rows(variants: list[Variant], concurrency: int) -> list[dict]:
    """One row per variant, with the columns derived from the teacher fp32, default and stock rows."""
    by_role = {(v.role, v.precision): v for v in variants if v.role != "student"}
    teacher, default, stock = by_role[("teacher", "fp32")], by_role[("default", "int8")], by_role[("stock", "fp32")]
    for variant in variants:
        row = variant.row
        row.update(variant=variant.label, role=variant.role, precision=variant.precision, checkpoint=str(variant.checkpoint))
        row["status"] = "ok" if variant.problem is None else variant.problem.splitlines()[0]
        row.update(model_shape(variant.checkpoint))
        onnx_file = variant.onnx_file
        row["onnx_mib"] = round(onnx_file.stat().st_size / 2**20, 2) if onnx_file and onnx_file.is_file() else None
        record = ModelSpec.from_checkpoint(variant.checkpoint).compression
        if record:
            row.update(training_seconds=record.seconds, distillation_steps=record.distillation_steps, kept_layers=" ".join(map(str, record.kept_layers)))
        if variant.rounds:
            row.update(concurrency=concurrency, requests_per_s=median_of(variant.rounds, "throughput_rps"), p50_ms=median_of(variant.rounds, "p50_ms"),
                       p99_ms=median_of(variant.rounds, "p99_ms"), errors=sum(level["errors"] for level in variant.rounds),
                       requests_per_s_rounds=" ".join(str(level["throughput_rps"]) for level in variant.rounds))  # fmt: skip
    for variant in variants:
        row = variant.row
        row["accuracy_delta_points"] = points(row.get("accuracy"), teacher.row.get("accuracy"))
        row["macro_f1_delta_points"] = points(row.get("macro_f1"), teacher.row.get("macro_f1"))
        row["inprocess_speedup_vs_default_archive"] = ratio(row.get("texts_per_s"), default.row.get("texts_per_s"))
        row["speedup_vs_default_archive"] = ratio(row.get("requests_per_s"), default.row.get("requests_per_s"))
        row["speedup_vs_stock"] = ratio(row.get("requests_per_s"), stock.row.get("requests_per_s"))
    return [{column: variant.row.get(column) for column in COLUMNS} for variant in variants]


def recommendation(rows: list[dict], budget_points: float, goal_speedup: float) -> dict:
    """The fastest (TorchServe req/s) int8 student within `budget_points` of the teacher's fp32 accuracy, or
    "recommended": None with the reason."""
    default = next(row for row in rows if row["role"] == "default")
    stock = next(row for row in rows if row["role"] == "stock")
    int8 = [row for row in rows if row["role"] == "student" and row["precision"] == "int8"]
    within = [row for row in int8 if row["status"] == "ok" and row["requests_per_s"] and row["accuracy_delta_points"] is not None
              and row["accuracy_delta_points"] >= -budget_points]  # fmt: skip
    goal = {"speedup_vs_default_archive": goal_speedup, "accuracy_delta_points": -budget_points}
    summary = {
        "goal": goal, "budget_points": budget_points, "default_archive_requests_per_s": default["requests_per_s"], "stock_requests_per_s": stock["requests_per_s"],
        "candidates": [{key: row[key] for key in ("variant", "status", "requests_per_s", "speedup_vs_default_archive", "accuracy_delta_points")} for row in int8],
    }  # fmt: skip
    if not within:
        if not int8:
            reason = "no student was given"
        else:
            reasons = [f"{row['variant']}: " + (row["status"] if row["status"] != "ok" else f"{row['accuracy_delta_points']} accuracy points") for row in int8]
            reason = f"no int8 student is within {budget_points} accuracy points of the teacher's fp32 ({'; '.join(reasons)})"
        keys = ("student", "variant", "speedup_vs_default_archive", "accuracy_delta_points", "macro_f1_delta_points", "batch_invariance_max_abs",
                "requests_per_s", "layers", "intermediate_size", "parameters", "training_seconds")  # fmt: skip
        return {"recommended": None, "reason": reason, **dict.fromkeys(keys), "goal_met": False, **summary}
    best = max(within, key=lambda row: row["requests_per_s"])
    met = bool(best["speedup_vs_default_archive"] and best["speedup_vs_default_archive"] >= goal_speedup)
    return {
        "recommended": best["variant"], "student": best["checkpoint"], "variant": best["precision"],
        **{key: best[key] for key in ("speedup_vs_default_archive", "speedup_vs_stock", "accuracy_delta_points", "macro_f1_delta_points",
                                      "batch_invariance_max_abs", "requests_per_s", "p50_ms", "p99_ms", "texts_per_s", "layers",
                                      "intermediate_size", "parameters", "onnx_mib", "training_seconds", "distillation_steps")},
        "goal_met": met,
        "reason": f"the fastest int8 student within {budget_points} accuracy points of the teacher's fp32"
                  + ("" if met else f"; below the goal of {goal_speedup}x the default archive's req/s"),
        **summary,
    }  # fmt: skip


def plot(rows: list[dict], path: Path, budget_points: float, goal_speedup: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"stock": "grey", "teacher": "black", "default": "tab:blue", "student": "tab:orange"}
    figure, axis = plt.subplots(figsize=(9, 5.5))
    shown = [row for row in rows if row["requests_per_s"] is not None and row["accuracy_delta_points"] is not None]
    for index, row in enumerate(sorted(shown, key=lambda row: row["requests_per_s"])):
        marker = "s" if row["precision"] == "int8" else "o"
        axis.scatter(row["requests_per_s"], row["accuracy_delta_points"], color=colours[row["role"]], marker=marker, s=50, zorder=3)
        offset = (5, 5) if index % 2 == 0 else (5, -12)  # neighbours alternate above / below their point
        axis.annotate(row["variant"], (row["requests_per_s"], row["accuracy_delta_points"]), textcoords="offset points", xytext=offset, fontsize=8)
    axis.scatter([], [], color="grey", marker="o", label="fp32 (circle)")
    axis.scatter([], [], color="grey", marker="s", label="int8 (square)")
    axis.axhline(-budget_points, color="tab:red", linestyle="--", linewidth=1, label=f"budget: {-budget_points} points vs teacher fp32")
    default = next(row for row in rows if row["role"] == "default")
    if default["requests_per_s"]:
        reference = default["requests_per_s"]
        axis.axvline(goal_speedup * reference, color="tab:green", linestyle=":", linewidth=1, label=f"goal: {goal_speedup}x the default archive's req/s")
        top = axis.secondary_xaxis("top", functions=(lambda x: x / reference, lambda x: x * reference))
        top.set_xlabel("speedup vs the default archive (same run)")
    axis.set(xlabel="requests / s through TorchServe (median over rounds)", ylabel="test accuracy - teacher fp32 (points)", title=title)
    axis.legend(fontsize=8, loc="lower left")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def print_table(rows: list[dict]) -> None:
    header = f"{'variant':24} {'layers':>6} {'ffn':>5} {'params':>9} {'MiB':>6} {'acc':>7} {'Δ pts':>6} {'F1 Δ':>6} {'texts/s':>8} {'req/s':>7} {'p50':>7} {'p99':>7} {'x dflt':>6} {'x stock':>7} {'max|Δp|':>8}  status"  # fmt: skip
    print("\n" + header)

    def cell(value, width, spec=""):
        return f"{'-' if value is None else format(value, spec):>{width}}"

    for row in rows:
        print(f"{row['variant']:24} {cell(row['layers'], 6)} {cell(row['intermediate_size'], 5)} {cell(row['parameters'], 9)} {cell(row['onnx_mib'], 6)} "
              f"{cell(row['accuracy'], 7)} {cell(row['accuracy_delta_points'], 6)} {cell(row['macro_f1_delta_points'], 6)} {cell(row['texts_per_s'], 8)} "
              f"{cell(row['requests_per_s'], 7)} {cell(row['p50_ms'], 7)} {cell(row['p99_ms'], 7)} {cell(row['speedup_vs_default_archive'], 6)} "
              f"{cell(row['speedup_vs_stock'], 7)} {cell(row['batch_invariance_max_abs'], 8, '.1e' if row['batch_invariance_max_abs'] else '')}  {row['status']}")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (parse_args reads it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=REPO / "artifacts/default/checkpoint", help="the fine-tuned checkpoint the students came from")
    parser.add_argument("--teacher-export", type=Path, help="reuse this export of the teacher (model.onnx + model.int8.onnx); default: export it under --work")
    parser.add_argument("--students", type=Path, nargs="*", default=[], help="student checkpoints (training.compress output, or any checkpoint)")
    parser.add_argument("--test-csv", type=Path, default=REPO / "artifacts/data/test.csv", help="label,txt CSV: accuracy, macro-F1 and the load's texts")
    parser.add_argument("--calibration", type=Path, default=REPO / "artifacts/data/train.csv", help="int8 calibration texts (as export.quantize)")
    parser.add_argument("--calibration-texts", type=int, default=DEFAULT_CALIBRATION_TEXTS)
    parser.add_argument("--evaluation", type=Path, help="label,txt CSV the int8 gate is checked on (default: --test-csv, as `make export`)")
    parser.add_argument("--parity-texts", type=Path, default=REPO / "artifacts/data/dev.csv", help="texts of the export's fp32 parity check")
    parser.add_argument("--int8-budget-points", type=float, default=0.5, help="the int8 gate of each export: int8 vs the same model's fp32")
    parser.add_argument("--budget-points", type=float, default=BUDGET_POINTS, help="a recommended student's largest loss vs the teacher's fp32, in points")
    parser.add_argument("--goal-speedup", type=float, default=GOAL_SPEEDUP, help="goal: req/s this many times the default archive's")
    parser.add_argument("--speed-texts", type=int, default=1024, help="texts timed in-process per variant (accuracy uses the whole test CSV)")
    parser.add_argument("--invariance-texts", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32, help="client threads of every TorchServe level")
    parser.add_argument("--max-requests", type=int, default=2000, help="per level")
    parser.add_argument("--max-seconds", type=float, default=30, help="per level")
    parser.add_argument("--warmup-requests", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench_results")
    parser.add_argument("--work", type=Path, help=f"exports, archives and TorchServe's files, in {'/'.join(WORK_PARTS)} (default: OUT/compression_pareto_work; removed after)")
    parser.add_argument("--keep-work", action="store_true", help="keep --work (the exports and archives) after the run")
    parser.add_argument("--quick", action="store_true", help="smoke: 64 texts, 48-request levels, 1 round")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options, with --evaluation defaulted and --quick's sizes applied."""
    args = build_parser().parse_args(argv)
    args.evaluation = args.evaluation or args.test_csv
    if args.quick:
        args.speed_texts, args.invariance_texts, args.max_requests, args.max_seconds, args.warmup_requests, args.rounds = 64, 16, 48, 10, 16, 1
        args.calibration_texts = min(args.calibration_texts, 64)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = args.work or args.out / "compression_pareto_work"
    remove_work(work)
    try:
        run(args, work, argv)
    finally:  # exports and archives are large: never left under --out unless asked for
        if not args.keep_work:
            remove_work(work)


def remove_work(work: Path) -> None:
    for part in WORK_PARTS:
        shutil.rmtree(work / part, ignore_errors=True)
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()


def run(args: argparse.Namespace, work: Path, argv: list[str] | None) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    store, exports = work / "model_store", work / "exports"
    gold, texts = read_labelled_csv(args.test_csv)
    if args.quick:
        gold, texts = gold[:64], texts[:64]

    teacher = args.teacher.resolve()
    teacher_export = args.teacher_export.resolve() if args.teacher_export else exports / "teacher"
    if args.teacher_export is None:
        refused = export_model(teacher, teacher_export, args, None)
        if refused:
            sys.exit(f"the teacher's own int8 was refused, so there is no default archive to compare with: {refused}")
    elif not (teacher_export / layout.INT8_ONNX_FILE).is_file():
        sys.exit(f"{teacher_export} has no {layout.INT8_ONNX_FILE}: export the teacher with `python -m export.onnx_export --int8` (the default archive serves it)")
    max_length = ModelSpec.load(teacher_export).max_length
    variants = [
        Variant("stock", "stock", "fp32", teacher, None, "stock"),
        Variant("teacher/fp32", "teacher", "fp32", teacher, teacher_export, "teacher_fp32"),
        Variant("default", "default", "int8", teacher, teacher_export, "default"),
    ]
    seen: set[str] = set()
    for number, student in enumerate(args.students):
        student = student.resolve()
        name = student.name if student.name not in seen else f"{student.name}_{number}"
        seen.add(name)
        export_dir = exports / f"s{number}_{safe_name(name)}"
        try:
            int8_problem = export_model(student, export_dir, args, max_length)
            fp32_problem = None
        except ExportError as failure:  # the fp32 export itself failed (e.g. parity): both rows say why
            print(f"{student}: export failed: {failure}", flush=True)
            fp32_problem = int8_problem = f"failed: export: {failure}"
        variants.append(Variant(f"{name}/fp32", "student", "fp32", student, export_dir, f"s{number}_{safe_name(name)}_fp32", fp32_problem))
        variants.append(Variant(f"{name}/int8", "student", "int8", student, export_dir, f"s{number}_{safe_name(name)}_int8", int8_problem))

    phases = {"exports": round(time.perf_counter() - started, 1)}
    measured = [variant for variant in variants if variant.problem is None]
    for variant in measured:
        mar = build(variant, store)
        variant.row.update(measure_in_process(variant, unpacked(mar, work / "unpacked" / variant.model_name), gold, texts, texts[: args.speed_texts],
                                              args.invariance_texts))  # fmt: skip
        shutil.rmtree(work / "unpacked" / variant.model_name)
        print(json.dumps({"variant": variant.label, **variant.row}), flush=True)
    phases["archives_and_in_process"] = round(time.perf_counter() - started - sum(phases.values()), 1)
    serve_rounds(measured, store, work, texts, args)
    phases["torchserve"] = round(time.perf_counter() - started - sum(phases.values()), 1)

    rows = table_rows(variants, args.concurrency)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "compression_pareto.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    title = f"Compressed students vs teacher, CPU ({os.cpu_count()} cores), TorchServe c{args.concurrency}"
    plot(rows, args.out / "compression_pareto.png", args.budget_points, args.goal_speedup, title)
    summary = recommendation(rows, args.budget_points, args.goal_speedup)
    summary |= {
        "teacher": str(teacher), "teacher_fp32_accuracy": rows[1]["accuracy"], "teacher_fp32_macro_f1": rows[1]["macro_f1"],
        "test_csv": str(args.test_csv), "test_texts": len(texts),
        "settings": {"concurrency": args.concurrency, "max_requests": args.max_requests, "max_seconds": args.max_seconds, "rounds": args.rounds,
                     "speed_texts": min(args.speed_texts, len(texts)), "invariance_texts": args.invariance_texts, "int8_budget_points": args.int8_budget_points,
                     "torchserve": {"batch_size": TorchServeSettings().batch_size, "max_batch_delay_ms": TorchServeSettings().max_batch_delay_ms,
                                    "workers": TorchServeSettings().min_workers}, "response_cache_size": 0, "quick": args.quick},
        "command": " ".join([Path(sys.executable).name, "-m", "bench.compression_pareto", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "cpu_count": os.cpu_count(),
        "seconds": round(time.perf_counter() - started, 1), "phase_seconds": phases,
    }  # fmt: skip
    (args.out / "compression.json").write_text(json.dumps(summary, indent=1) + "\n")
    print_table(rows)
    if summary["recommended"]:
        print(f"\nrecommended: {summary['recommended']} ({summary['student']}): {summary['speedup_vs_default_archive']}x the default archive's req/s, "
              f"{summary['accuracy_delta_points']:+} accuracy points vs teacher fp32; goal {'met' if summary['goal_met'] else 'not met'}")  # fmt: skip
    else:
        print(f"\nno recommendation: {summary['reason']}")
    print(f"{summary['seconds']} s ({', '.join(f'{name} {seconds} s' for name, seconds in phases.items())}); wrote {args.out / 'compression_pareto.csv'}, .png and {args.out / 'compression.json'}")


if __name__ == "__main__":
    main()
