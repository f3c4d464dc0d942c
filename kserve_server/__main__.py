"""Serve a bert_trt .mar with KServe's model server: v1 and v2 REST, and v2 (OIP) gRPC.

    python -m kserve_server --mar model_store/bert_trt.mar [--http-port 8080] [--grpc-port 8081] [--model-name bert_trt]
    python -m kserve_server --mar ... --gpu-id 0 --workers 4     # four processes on the same ports (workers.py)

The archive is unpacked into --unpack-dir (default: a temporary folder) and served with the settings in its
model-config.yaml (the handler section; batchSize becomes the batcher's texts per batch). No token:
KServe leaves authentication to the platform (Kubernetes network policy, Istio/Knative auth); bind to
loopback (the default here) unless something in front of it checks callers.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

from handler import layout
from handler.errors import ArchiveError, run_cli
from handler.settings import HandlerSettings
from kserve_server.batcher import GPU_MAX_IN_FLIGHT, BatchingSettings


def unpacked_mar(mar: Path, work: Path) -> Path:
    """The archive extracted into `work` (as TorchServe extracts it for a worker)."""
    if not mar.is_file():
        raise ArchiveError(f"no archive at {mar}: build it with `make mar` (or build_mar.py)")
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(work)
    return work


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mar", type=Path, default=Path("model_store/bert_trt.mar"))
    parser.add_argument("--model-name", default="bert_trt")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--grpc-port", type=int, default=8081, help="Open Inference Protocol gRPC port, on the same --host")
    parser.add_argument("--no-grpc", action="store_true", help="serve REST only")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--unpack-dir", type=Path, help="where to unpack the archive (default: a temporary folder)")
    parser.add_argument("--gpu-id", type=int, help="serve on this CUDA device (default: the CPU backends)")
    parser.add_argument("--max-in-flight", type=int, help=f"batches computed at once (default {BatchingSettings.max_in_flight}, "
                        f"{GPU_MAX_IN_FLIGHT} with --gpu-id: one batch is tokenized while another runs)")
    parser.add_argument("--max-delay-ms", type=float, default=BatchingSettings.max_delay_ms, help="wait this long for a fuller batch (0: never)")
    parser.add_argument("--max-queued-texts", type=int, default=BatchingSettings.max_queued_texts,
                        help="texts that may wait for a batch; beyond, requests get 503 / UNAVAILABLE at once")
    parser.add_argument("--workers", type=int, default=1, help="server processes on the same ports, each with its own model "
                        "(default 1; a GPU needs several to stay busy: README \"GPU\")")
    # set by the supervisor for its workers: share the ports, and divide the CPU threads among this many
    parser.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.workers > 1:
        from kserve_server.workers import WorkerSupervisor

        status = WorkerSupervisor(sys.argv[1:] if argv is None else argv, args.workers, args.unpack_dir).run()
        if status:
            sys.exit(status)
        return
    # kserve parses sys.argv itself when imported (argparse with abbreviations: our --work would be read as
    # its --workers): it must see none of our options
    sys.argv = sys.argv[:1]

    work = args.unpack_dir or Path(tempfile.mkdtemp(prefix="bert_trt_kserve_"))
    model_dir = unpacked_mar(args.mar, work)
    config_path = model_dir / layout.MODEL_CONFIG_FILE
    model_yaml = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    settings = HandlerSettings.from_model_yaml(model_yaml).for_workers(args.worker_of or 1)
    in_flight = args.max_in_flight or (GPU_MAX_IN_FLIGHT if args.gpu_id is not None else BatchingSettings.max_in_flight)
    batching = BatchingSettings(int(model_yaml.get("batchSize", BatchingSettings.max_batch_texts)), in_flight, args.max_delay_ms, args.max_queued_texts)
    from kserve_server.model import BertClassifierModel

    model = BertClassifierModel(args.model_name, model_dir, settings, batching, args.gpu_id)
    model.load()

    from kserve_server.server import serve

    serve(model, args.host, args.http_port, None if args.no_grpc else args.grpc_port, share_ports=args.worker_of is not None)


if __name__ == "__main__":
    run_cli(main)
