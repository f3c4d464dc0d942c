"""Several server processes behind one address (`python -m kserve_server --workers N`).

One Python process cannot feed a GPU (tokenizing and answering hold the interpreter: docs/gpu-and-tensorrt.md), so
the server can run N copies of itself, each with its own model and backend, all listening on the same
HTTP and gRPC ports (SO_REUSEPORT: the kernel spreads connections across them). A process binds its
ports only after its model has loaded and warmed up, so connections only reach ready ones.

This supervisor starts them, restarts one that exits (nothing in its queue is lost to a running peer: its
own in-flight requests fail with it, as with any crashed replica), and on SIGTERM / SIGINT stops them all
within the grace period. Their Prometheus figures are merged on every /metrics (prometheus_client's
multiprocess mode, in a folder of its own), so a scrape sees the whole server.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: seconds a process gets to finish at shutdown before it is killed
STOP_GRACE_S = 30
#: a process that exits sooner than this after its start is restarted only after this long (no tight loop)
RESTART_BACKOFF_S = 5.0
#: the environment variable prometheus_client's multiprocess mode reads
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def worker_command(argv: list[str], index: int, count: int, unpack_root: Path) -> list[str]:
    """The command line of worker `index` of `count`: our own arguments without --workers / --unpack-dir,
    plus the flag that makes it share its ports (and its CPU threads), and a folder of its own for the archive."""
    kept: list[str] = []
    skip = False
    for argument in argv:
        if skip:
            skip = False
            continue
        name = argument.split("=", 1)[0]
        if name in ("--workers", "--unpack-dir"):
            skip = "=" not in argument
            continue
        kept.append(argument)
    return [sys.executable, "-m", "kserve_server", *kept, "--worker-of", str(count), "--unpack-dir", str(unpack_root / f"worker{index}")]


class WorkerSupervisor:
    """Starts `count` worker processes, keeps them running, stops them together."""

    def __init__(self, argv: list[str], count: int, unpack_dir: Path | None = None):
        if count < 1:
            raise ValueError(f"--workers must be at least 1, got {count}")
        self.argv = argv
        self.count = count
        self.unpack_root = unpack_dir or Path(tempfile.mkdtemp(prefix="bert_trt_kserve_workers_"))
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="bert_trt_prometheus_"))
        self.processes: dict[int, tuple[subprocess.Popen, float]] = {}
        self.stopping = False

    def start_worker(self, index: int) -> None:
        """Start (or restart) worker `index`."""
        environment = {**os.environ, MULTIPROCESS_DIR_VARIABLE: str(self.metrics_dir)}
        process = subprocess.Popen(worker_command(self.argv, index, self.count, self.unpack_root), env=environment)
        self.processes[index] = (process, time.monotonic())
        logger.info("started worker %d (pid %d)", index, process.pid)

    def mark_dead(self, pid: int) -> None:
        """Drop a dead worker's live gauges from the merged /metrics (its counters stay in the totals)."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self.metrics_dir))

    def stop(self, *_signal) -> None:
        """Ask every worker to finish (SIGTERM); `run` then waits for them."""
        self.stopping = True
        for process, _ in self.processes.values():
            if process.poll() is None:
                process.terminate()

    def run(self) -> int:
        """Start the workers, restart any that exits, and return once all have stopped after a signal:
        0 when every worker stopped cleanly, else the first non-zero exit status."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        for index in range(self.count):
            self.start_worker(index)
        try:
            while not self.stopping:
                time.sleep(0.5)
                for index, (process, started) in list(self.processes.items()):
                    status = process.poll()
                    if status is None or self.stopping:
                        continue
                    logger.error("worker %d (pid %d) exited with status %d; restarting it", index, process.pid, status)
                    self.mark_dead(process.pid)
                    if time.monotonic() - started < RESTART_BACKOFF_S:
                        time.sleep(RESTART_BACKOFF_S)
                    self.start_worker(index)
            return self.wait_for_all()
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def wait_for_all(self) -> int:
        """Wait up to STOP_GRACE_S for every worker, kill the rest; the first non-zero status or 0."""
        deadline = time.monotonic() + STOP_GRACE_S
        statuses = []
        for process, _ in self.processes.values():
            try:
                statuses.append(process.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                process.kill()
                statuses.append(process.wait())
        # a worker stopped by our SIGTERM exits 0 (uvicorn's shutdown) or -SIGTERM: both are clean
        return next((status for status in statuses if status not in (0, -signal.SIGTERM)), 0)


def merged_metrics_enabled() -> bool:
    """Whether this process is one of several workers whose figures /metrics merges."""
    return bool(os.environ.get(MULTIPROCESS_DIR_VARIABLE))
