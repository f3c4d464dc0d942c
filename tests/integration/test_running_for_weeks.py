"""docs/operations.md ("Running for weeks"), held to a real TorchServe: the key file and its renewer (standalone, as for a
TorchServe started by hand, and the one `start`/`stop` manage), the timeouts TorchServe applies from the
archive, loopback-only listeners, the metrics port without a token, and a start slower than responseTimeout.
(The renewal schedule itself is unit-tested in tests/ops/test_keys_unit.py.)"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest
import requests

from export.mar import TorchServeSettings
from harness.torchserve import RENEWER_PID_FILE, TorchServe
from ops.keys import read_keys
from tests.integration import slow_start_handler
from tests.integration.slow_start_handler import SLOW_START_S


@pytest.fixture(scope="module")
def by_hand(tiny_model_store, tmp_path_factory):
    """TorchServe with no key renewer, as one started by hand with `torchserve --start`."""
    with TorchServe(workdir=tmp_path_factory.mktemp("ts_by_hand"), model_store=tiny_model_store).running(renew_keys=False) as server:
        yield server


def keys_cli(server: TorchServe, *args: str) -> subprocess.CompletedProcess:
    """`python -m ops.keys ...` for `server`, as a user runs it beside a TorchServe they started themselves."""
    command = [sys.executable, "-m", "ops.keys", *args, "--config", str(server.write_config()), "--key-dir", str(server.workdir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_key_file_is_private_and_only_the_api_key_never_expires(by_hand):
    key_file = by_hand.workdir / "key_file.json"
    assert key_file.stat().st_mode & 0o777 == 0o600, oct(key_file.stat().st_mode)
    keys = read_keys(by_hand.workdir)
    assert keys["API"].seconds_left() == float("inf")
    for kind in ("inference", "management"):  # the shipped 60-minute keys
        assert 0 < keys[kind].seconds_left() <= 60 * 60, (kind, keys[kind])


def test_keys_cli_shows_and_renews_the_keys_of_a_server_it_did_not_start(by_hand):
    shown = keys_cli(by_hand, "show")
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(": ", 1) for line in shown.stdout.splitlines())
    assert lines["API"] == "never expires" and lines["inference"].endswith(" s left"), shown.stdout
    before = read_keys(by_hand.workdir)
    renewed = keys_cli(by_hand, "renew-once", "--kinds", "inference")
    assert renewed.returncode == 0 and "renewed: inference" in renewed.stdout, renewed.stdout + renewed.stderr
    after = read_keys(by_hand.workdir)
    assert after["inference"].value != before["inference"].value and after["management"].value == before["management"].value
    old = requests.post(f"{by_hand.inference_url}/predictions/bert_trt", data=b"hi", timeout=10,
                        headers={"Authorization": f"Bearer {before['inference'].value}", "Content-Type": "text/plain"})  # fmt: skip
    assert old.status_code == 400 and "InvalidKeyException" in old.text
    assert by_hand.predict("answered with the new key").status_code == 200


def test_standalone_renewer_runs_until_stopped_and_says_what_it_did(by_hand, tmp_path):
    """`python -m ops.keys renew` started by a user beside their server: it keeps running (a key renewer, not a
    one-shot), logs nothing alarming while keys are fresh, and stops on SIGTERM."""
    log = tmp_path / "renewer.log"
    command = [sys.executable, "-m", "ops.keys", "renew", "--config", str(by_hand.write_config()), "--key-dir", str(by_hand.workdir)]
    with log.open("wb") as output:
        renewer = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        time.sleep(5)
        assert renewer.poll() is None, log.read_text()
        assert "Error" not in log.read_text() and "cannot" not in log.read_text(), log.read_text()
    finally:
        renewer.terminate()
        renewer.wait(10)
    assert renewer.returncode is not None


def test_torchserve_applies_the_archives_timeouts(by_hand):
    """startupTimeout 300 s, responseTimeout 120 s and maxRetryTimeoutInSec one week, as TorchServe reports them."""
    shipped = TorchServeSettings()
    described = by_hand.describe("bert_trt")
    assert (described["startupTimeout"], described["responseTimeout"], described["maxRetryTimeoutInSec"]) == (
        shipped.startup_timeout_s, shipped.response_timeout_s, shipped.max_retry_timeout_s) == (300, 120, 7 * 24 * 3600)  # fmt: skip


def test_every_listener_is_on_loopback_and_metrics_need_no_token(by_hand):
    processes = by_hand.running_processes()
    listening = [c.laddr for p in processes for c in p.connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 5, listening  # inference, management, metrics, both gRPC ports
    assert all(address.ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for address in listening), listening
    metrics = requests.get(f"{by_hand.metrics_url}/metrics", timeout=10)
    assert metrics.status_code == 200, metrics.text  # (metrics_mode=log ships the counters to logs; the port answers)


def test_start_runs_the_key_renewer_and_stop_ends_it(tiny_model_store, tmp_path):
    """What `make serve` / `make stop` do (harness.torchserve start / stop): the renewer runs beside TorchServe,
    logs to logs/key_renewer.log, and is gone after the stop."""
    server = TorchServe(workdir=tmp_path, model_store=tiny_model_store).start()
    try:
        renewer = psutil.Process(int((tmp_path / RENEWER_PID_FILE).read_text()))
        command = " ".join(renewer.cmdline())
        assert "ops.keys renew" in command and str(tmp_path) in command, command
        assert (server.log_dir / "key_renewer.log").is_file()
    finally:
        survivors = server.stop()
    assert survivors == []
    assert not renewer.is_running() or renewer.status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / RENEWER_PID_FILE).exists()


def test_a_start_slower_than_response_timeout_is_not_killed(tiny_checkpoint, tiny_export, tmp_path):
    """Loading has its own budget: a worker that loads for longer than responseTimeout (2 s here) but within
    startupTimeout becomes ready on its first try, never restarted."""
    import build_mar
    from export.mar import build_mar as build_archive

    args = ["--checkpoint", str(tiny_checkpoint), "--export-dir", str(tiny_export), "--out", str(tmp_path / "store"),
            "--model-name", "slow_start", "--handler", slow_start_handler.__file__,
            "--response-timeout", "2", "--startup-timeout", "60", "--min-workers", "1", "--max-workers", "1"]  # fmt: skip
    build_archive(build_mar.parse_args(args))
    assert SLOW_START_S > 2
    started = time.monotonic()
    with TorchServe(workdir=tmp_path / "run", model_store=tmp_path / "store", models=["slow_start=slow_start.mar"]).running(renew_keys=False) as server:
        ready_after = time.monotonic() - started
        assert server.predict("loaded slowly", model_name="slow_start").status_code == 200
        log = (server.log_dir / "model_log.log").read_text(errors="replace")
    assert log.count("slow start: loading for") == 1, "the worker was restarted while loading"
    assert ready_after >= SLOW_START_S
