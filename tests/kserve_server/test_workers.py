"""The --workers supervisor's command lines (the processes themselves: tests/integration/test_kserve_workers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kserve_server.workers import WorkerSupervisor, worker_command


def test_a_worker_runs_our_arguments_without_workers_and_with_its_own_unpack_dir():
    argv = ["--mar", "m.mar", "--workers", "4", "--gpu-id", "0", "--unpack-dir=/tmp/u", "--http-port", "9000"]
    command = worker_command(argv, 2, 4, Path("/tmp/root"))
    assert command[:3] == [sys.executable, "-m", "kserve_server"]
    assert command[3:] == ["--mar", "m.mar", "--gpu-id", "0", "--http-port", "9000", "--worker-of", "4", "--unpack-dir", "/tmp/root/worker2"]


def test_zero_workers_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="at least 1"):
        WorkerSupervisor([], 0)
