"""The Triton peer: the same classifier behind Triton Inference Server 2.51 (through PyTriton 0.7).

    make bench-triton-env          # .venv-triton from Debian's /usr/bin/python3.11 (bench/requirements-triton.txt)
    .venv-triton/bin/python -m bench.triton_peer --model-dir DIR --http-port 8000

What an engineer would build instead of our archive: Triton's dynamic batcher (max batch 32, every
size 1..32 preferred, so a request on an idle model goes at once; 5 ms queue bound) in front of one
model instance that runs *our* tokenizer, length sort, sub-batches of 8 and ONNX Runtime session on
the same ``model.int8.onnx`` (`handler.classifier.TextClassifier`). Only the serving layer differs,
so a comparison measures the servers. Open Inference Protocol (v2) over HTTP:

    POST /v2/models/bert/infer
    {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["a review"]}]}
    -> outputs "probabilities" (FP32 [1, labels], in the order of serving_spec.json's labels)

Runs in its own environment: PyTriton's Python backend stub loads the system libpython, and
PyTriton 0.7 needs numpy < 2. DIR is laid out like an unpacked .mar (checkpoint/, serving_spec.json,
model.int8.onnx); `bench.peer_comparison` makes it and starts this script.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from handler.backends.onnxruntime import OnnxRuntimeBackend
from handler.classifier import TextClassifier, softmax
from handler.settings import OnnxRuntimeOptions
from handler.spec import ModelSpec
from handler.tokenizer import load_tokenizer

MODEL_NAME = "bert"
MAX_BATCH_SIZE = 32


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--max-queue-delay-ms", type=float, default=5)
    parser.add_argument("--num-threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: the usable cores)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    spec = ModelSpec.load(args.model_dir)
    backend = OnnxRuntimeBackend(args.model_dir, spec, OnnxRuntimeOptions(num_threads=args.num_threads)).load()
    classifier = TextClassifier(load_tokenizer(args.model_dir), backend, spec)

    @batch
    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        texts = [row[0].decode("utf-8") for row in text]
        return {"probabilities": softmax(classifier.logits(texts)).astype(np.float32)}

    config = TritonConfig(
        http_address="127.0.0.1", http_port=args.http_port, grpc_address="127.0.0.1", grpc_port=args.grpc_port, metrics_port=args.metrics_port
    )
    batcher = DynamicBatcher(max_queue_delay_microseconds=int(args.max_queue_delay_ms * 1000), preferred_batch_size=list(range(1, MAX_BATCH_SIZE + 1)))
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=infer,
            inputs=[Tensor(name="text", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(len(spec.labels),))],
            config=ModelConfig(max_batch_size=MAX_BATCH_SIZE, batcher=batcher),
            strict=True,
        )
        logging.getLogger("bench.triton_peer").info("serving %s on 127.0.0.1:%d: %s", MODEL_NAME, args.http_port, backend.describe())
        triton.serve()


if __name__ == "__main__":
    main()
