"""A load generator light enough to measure a server doing tens of thousands of requests per second.

`bench/load_test.py`'s clients (http.client in threads) spend ~100 µs of CPU per request, which on one
host is CPU taken from the server being measured. Here each client process runs an asyncio event loop
(uvloop when installed) over raw keep-alive HTTP/1.1 connections: requests are prebuilt bytes, a reply
is read to its Content-Length (or the end of a chunked body), and nothing else is parsed; ~10-20 µs
per request. Closed loop: each connection sends its next request when its reply has arrived.

    python -m bench.http_load --port 8085 --texts test.csv                     # KServe v1 (make kserve)
    python -m bench.http_load --port 8080 --texts test.csv --torchserve-key KEY  # TorchServe's /predictions
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
import numpy as np

from bench.load_test import Target, torchserve_key_target

#: seconds each level runs before it starts counting (connections open, batches settle)
WARM_UP_S = 1.0


def raw_requests(target: Target) -> list[bytes]:
    """Every body of `target` (bench/load_test.py's endpoint + bodies) as a complete HTTP/1.1 POST request."""
    head = "".join(f"{name}: {value}\r\n" for name, value in target.headers.items())
    return [
        f"POST {target.path} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        for body in target.bodies
    ]


def kserve_v1_target(port: int, model: str, texts: list[str]) -> Target:
    """KServe v1 requests with one text each."""
    bodies = [json.dumps({"instances": [text]}).encode() for text in texts]
    return Target(port, f"/v1/models/{model}:predict", {"Content-Type": "application/json"}, bodies)


class ClosedLoopConnection(asyncio.Protocol):
    """One keep-alive connection that sends a request, reads its reply, records it, sends the next."""

    def __init__(self, requests: list[bytes], offset: int, state: dict):
        self.requests = requests
        self.index = offset
        self.state = state
        self.buffer = bytearray()
        self.expected: int | None = None
        self.chunked = False
        self.status = 0
        self.started = 0.0
        self.transport: asyncio.Transport | None = None
        self.finished = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.send_next()

    def send_next(self) -> None:
        if time.perf_counter() >= self.state["deadline"]:
            self.transport.close()
            return
        self.index = (self.index + 7919) % len(self.requests)
        self.buffer.clear()
        self.expected, self.chunked = None, False
        self.started = time.perf_counter()
        self.transport.write(self.requests[self.index])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.expected is None and not self.chunked:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"content-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at)
                self.expected = end + 4 + int(head[at + 15 : line_end if line_end >= 0 else len(head)])
            else:
                self.chunked = True
        if self.chunked:
            if not self.buffer.endswith(b"0\r\n\r\n"):
                return
        elif len(self.buffer) < self.expected:
            return
        now = time.perf_counter()
        if now >= self.state["counting_from"]:
            self.state["latencies"].append(now - self.started)
            self.state["errors"] += self.status != 200
        self.send_next()

    def connection_lost(self, exc) -> None:
        if exc is not None:
            self.state["errors"] += 1
        if not self.finished.done():
            self.finished.set_result(None)


async def run_connections(target: Target, connections: int, seconds: float, seed: int) -> dict:
    """`connections` closed-loop connections for WARM_UP_S + `seconds`; latencies of the counted part."""
    loop = asyncio.get_running_loop()
    now = time.perf_counter()
    state = {"counting_from": now + WARM_UP_S, "deadline": now + WARM_UP_S + seconds, "latencies": [], "errors": 0}
    requests = raw_requests(target)
    protocols = []
    for i in range(connections):
        _, protocol = await loop.create_connection(lambda i=i: ClosedLoopConnection(requests, seed * 1009 + i * 31, state), "127.0.0.1", target.port)
        protocols.append(protocol)
    await asyncio.gather(*(protocol.finished for protocol in protocols))
    return {"latencies": state["latencies"], "errors": state["errors"]}


def client_process(target: Target, connections: int, seconds: float, seed: int) -> dict:
    """One client process: its own event loop (uvloop when installed)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(run_connections(target, connections, seconds, seed))


def run_http_level(target: Target, concurrency: int, seconds: float, processes: int = 1) -> dict:
    """`concurrency` connections in total over `processes` client processes; throughput and latency."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    if processes == 1:
        results = [client_process(target, concurrency, seconds, 0)]
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(client_process, [target] * processes, shares, [seconds] * processes, range(processes)))
    latencies = np.array([value for result in results for value in result["latencies"]]) * 1000
    if not len(latencies):
        raise RuntimeError(f"no reply from 127.0.0.1:{target.port}{target.path} within {WARM_UP_S + seconds:.0f} s")
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": sum(result["errors"] for result in results),
        "seconds": seconds,
        "throughput_rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p95_ms": round(float(np.percentile(latencies, 95)), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="bert_trt")
    parser.add_argument("--texts", required=True, help="a label,txt CSV (the test split)")
    parser.add_argument("--torchserve-key", help="send to TorchServe's /predictions with this inference key (default: KServe v1)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--processes", type=int, default=2)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    from training.data import read_labelled_csv

    _, texts = read_labelled_csv(args.texts)
    if args.torchserve_key:
        target = torchserve_key_target(args.port, args.model, texts, args.torchserve_key)
    else:
        target = kserve_v1_target(args.port, args.model, texts)
    for concurrency in args.concurrency:
        print(json.dumps(run_http_level(target, concurrency, args.seconds, args.processes)), flush=True)


if __name__ == "__main__":
    main()
