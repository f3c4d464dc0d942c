"""Faults under load against a real TorchServe, bounded in count and time: nothing hangs, nothing is
answered wrong, only the requests in flight at the fault fail, and the server recovers on its own."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from export.mar import TorchServeSettings
from harness.load import in_background, run_load
from harness.torchserve import TorchServe
from tests.integration.test_torchserve import TEXTS

THREADS = 8


def correct(outcomes, reference_classifier) -> list[str]:
    """Descriptions of 200 answers that differ from the in-process reference (none expected)."""
    expected = {text: answer for text, answer in zip(TEXTS, reference_classifier.classify(TEXTS))}
    wrong = []
    for outcome in outcomes:
        if outcome.status == 200:
            got = json.loads(outcome.body)
            want = expected[outcome.payload]
            if got["label"] != want["label"] or abs(got["score"] - want["score"]) > 1e-4:
                wrong.append(f"{outcome.payload[:30]!r}: {got['label']} {got['score']} vs {want['label']} {want['score']}")
    return wrong


@pytest.fixture(scope="module")
def server(tiny_model_store, tmp_path_factory):
    """TorchServe with the tests' archive and the model API on (to register copies)."""
    with TorchServe(workdir=tmp_path_factory.mktemp("ts_faults"), model_store=tiny_model_store, enable_model_api=True).running() as instance:
        yield instance


@pytest.fixture(scope="module")
def slow_server(slow_model_store, tmp_path_factory):
    """TorchServe with slow.mar (responseTimeout 5 s) and a job queue of 4 requests."""
    instance = TorchServe(workdir=tmp_path_factory.mktemp("ts_slow"), model_store=slow_model_store, models=["slow=slow.mar"], overrides={"job_queue_size": "4"})
    with instance.running():
        yield instance


#: seconds from a worker's SIGKILL until a new worker (one worker, the shipped archive) answers a prediction:
#: measured 3.1-5.4 s on the 2-core machine with training on both cores (a worker's cold start is ~3 s, README
#: "Cold start"); the bound leaves room for a slower CI machine and one failed restart (TorchServe backs off 1 s)
WORKER_RECOVERY_BOUND_S = 20.0


def gone(process: psutil.Process, timeout: float = 10) -> None:
    """Wait until `process` has exited (a zombie counts: it answers nothing)."""
    deadline = time.monotonic() + timeout
    while process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"process {process.pid} still runs {timeout:.0f} s after SIGKILL"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def one_worker_server(tiny_checkpoint, tiny_export, tmp_path_factory):
    """TorchServe with the tests' model as build_mar.py ships it for the CPU (batchSize, maxBatchDelay and
    timeouts at their defaults), but one worker: after a kill, only a new worker can answer."""
    import build_mar
    from export.mar import build_mar as build_archive

    store = tmp_path_factory.mktemp("one_worker") / "model_store"
    args = ["--checkpoint", str(tiny_checkpoint), "--export-dir", str(tiny_export), "--target", "cpu", "--out", str(store),
            "--min-workers", "1", "--max-workers", "1"]  # fmt: skip
    build_archive(build_mar.parse_args(args))
    with TorchServe(workdir=tmp_path_factory.mktemp("ts_one_worker"), model_store=store).running() as instance:
        yield instance


def test_worker_killed_under_load_is_replaced_by_a_new_worker_that_answers(one_worker_server, reference_classifier, record_property):
    """One worker at the shipped batch delay, SIGKILLed under load: requests in flight at the kill fail with a
    5xx, or (TorchServe 0.12, when the kill lands while the frontend is still gathering the batch) get no
    answer until the client's timeout. A request sent after the kill can only be answered by a new worker:
    it is, within WORKER_RECOVERY_BOUND_S, and the management API then shows one READY worker with a new pid.
    Every request sent after the kill is answered, correctly."""
    server = one_worker_server
    description = server.describe("bert_trt")
    assert description["batchSize"] == TorchServeSettings().batch_size and description["maxBatchDelay"] == TorchServeSettings().max_batch_delay_ms
    assert [worker["status"] for worker in description["workers"]] == ["READY"]
    worker = psutil.Process(int(description["workers"][0]["pid"]))
    thread, result = in_background(run_load, server, TEXTS, THREADS, seconds=24, timeout=10)
    time.sleep(4)
    killed_at = time.monotonic()
    worker.send_signal(signal.SIGKILL)
    gone(worker)
    # why ops.health has its own readiness probe (README): TorchServe's /ping still says Healthy with its only worker dead
    ping = server.request("GET", f"{server.inference_url}/ping", timeout=10)
    first_after = server.predict(TEXTS[0], timeout=60)  # sent after the kill: waits in the queue for the new worker
    recovery = time.monotonic() - killed_at
    workers_after = server.describe("bert_trt")["workers"]
    thread.join(90)
    outcomes = result[0]
    lost = [o for o in outcomes if o.status != 200]
    assert ping.status_code == 200 and "Healthy" in ping.text, ping.text
    assert first_after.status_code == 200, first_after.text
    assert first_after.json()["label"] == reference_classifier.classify([TEXTS[0]])[0]["label"]
    assert len(workers_after) == 1 and workers_after[0]["status"] == "READY", workers_after
    assert int(workers_after[0]["pid"]) != worker.pid, "the management API still shows the killed worker's pid"
    assert recovery < WORKER_RECOVERY_BOUND_S, f"a new worker answered {recovery:.1f} s after the kill"
    assert all(500 <= o.status < 600 or o.hung for o in lost), sorted({(o.status, o.error) for o in lost})
    # in flight = sent before the frontend noticed the worker's death (the batch delay is 1 ms; 0.5 s covers the noticing)
    assert all(o.started <= killed_at + 0.5 for o in lost), [(round(o.started - killed_at, 2), o.status, o.error) for o in lost]
    assert len(lost) <= THREADS, f"{len(lost)} lost: more than the requests in flight"
    assert not correct(outcomes, reference_classifier)
    assert [o for o in outcomes if o.status == 200 and o.started > killed_at + recovery]
    summary = (f"{len(outcomes)} requests, {len(lost)} lost ({sum(o.hung for o in lost)} unanswered until the client timeout, "
               f"{sum(o.status >= 500 for o in lost)} x 5xx), a new worker answered {recovery:.1f} s after the kill")  # fmt: skip
    record_property("worker_kill", summary)
    print(f"\nworker SIGKILL under load (one worker): {summary}")


def test_batch_slower_than_response_timeout_fails_cleanly_and_the_worker_is_recycled(slow_server):
    worker_pid = slow_server.describe("slow")["workers"][0]["pid"]
    start = time.monotonic()
    slow = slow_server.predict("sleep 30", model_name="slow", timeout=60)
    elapsed = time.monotonic() - start
    assert slow.status_code == 500 and "Worker died" in slow.text, slow.text
    assert 4.5 <= elapsed < 20, f"answered after {elapsed:.1f} s with responseTimeout 5 s"
    deadline = time.monotonic() + 90
    while slow_server.predict("after the timeout", model_name="slow").status_code != 200:
        assert time.monotonic() < deadline, "no answer within 90 s of the timeout"
    assert slow_server.describe("slow")["workers"][0]["pid"] != worker_pid


#: a refused request's answer time (send to whole answer read, connections opened beforehand), p95 and max over the
#: 20 refusals of a burst of 24: measured p95 26-61 ms, max 29-64 ms on the 2-core machine with training on both
#: cores (so the 36 ms once seen on a quiet machine is no guarantee); the bounds leave 2.5x / 4x of that
QUEUE_FULL_P95_BOUND_S = 0.15
QUEUE_FULL_MAX_BOUND_S = 0.25


def burst(server: TorchServe, texts: list[str], model_name: str) -> list[tuple[int, float]]:
    """(status, seconds) of one prediction per text, all sent at once: each client thread connects and builds its
    request first, then all send together, timed from send to the whole answer read (the server's time to
    answer, not the client's start-up)."""
    url = urllib.parse.urlsplit(server.inference_url)
    headers = {**server.headers("inference"), "Content-Type": "text/plain; charset=utf-8"}
    start = threading.Barrier(len(texts))

    def one(text: str) -> tuple[int, float]:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        try:
            connection.connect()
            start.wait(30)
            sent = time.monotonic()
            connection.request("POST", f"/predictions/{model_name}", body=text.encode("utf-8"), headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status, time.monotonic() - sent
        finally:
            connection.close()

    with ThreadPoolExecutor(len(texts)) as pool:
        return list(pool.map(one, texts))


def test_full_job_queue_answers_fast_503s_and_every_accepted_request(slow_server, record_property):
    """24 requests at once while the one worker sleeps and the queue holds 4: 20 are refused with a 503 at once
    (p95 under QUEUE_FULL_P95_BOUND_S, none slower than QUEUE_FULL_MAX_BOUND_S), the 4 queued are answered."""
    hold, _ = in_background(slow_server.predict, "sleep 3", model_name="slow", timeout=60)
    time.sleep(0.5)  # the worker is busy with the sleeping batch; the queue holds 4
    results = burst(slow_server, [f"burst request {index}" for index in range(24)], model_name="slow")
    hold.join(60)
    refused = sorted(seconds for status, seconds in results if status == 503)
    answered = [status for status, _ in results if status == 200]
    assert len(refused) + len(answered) == 24, sorted({status for status, _ in results})
    assert len(refused) == 20 and len(answered) == 4, results
    p50, p95 = refused[len(refused) // 2], refused[int(0.95 * (len(refused) - 1))]
    summary = f"{len(refused)} x 503 (p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {refused[-1] * 1000:.0f} ms), {len(answered)} x 200"
    record_property("queue_full", summary)
    print(f"\nqueue full: {summary}")
    assert p95 < QUEUE_FULL_P95_BOUND_S and refused[-1] < QUEUE_FULL_MAX_BOUND_S, summary
    assert slow_server.predict("after the burst", model_name="slow").status_code == 200


#: 500s TorchServe 0.12's frontend answers a scale-down or an unregister with while its workers are busy (seen in CI runs)
MANAGEMENT_RACES = ("ConcurrentModificationException", 'because \\"job\\" is null')


def retried_on_races(call, accepted: tuple[int, ...]):
    """`call()` (a management request) again, up to 5 times, while TorchServe answers it with one of its races' 500s."""
    attempts = []
    while not attempts or attempts[-1].status_code == 500:
        assert len(attempts) < 5, [a.text for a in attempts]
        attempts.append(call())
        assert attempts[-1].status_code in accepted or any(race in attempts[-1].text for race in MANAGEMENT_RACES), attempts[-1].text
        time.sleep(0.5 if attempts[-1].status_code == 500 else 0)
    return attempts[-1]


def test_scale_down_and_unregister_during_load_lose_only_in_flight_requests(server, reference_classifier, record_property):
    """Scaling a model down and unregistering it under load: requests in flight on a stopped worker may get
    no answer (TorchServe 0.12 drops a batch it was still gathering), nothing sent after an event hangs,
    answers are correct, and once the model is gone requests get 404 at once."""
    management = server.management_url
    register = server.request("POST", f"{management}/models?url=bert_trt.mar&model_name=copy&initial_workers=2&synchronous=true", "management", timeout=240)
    assert register.status_code == 200, register.text
    thread, result = in_background(run_load, server, TEXTS, 6, seconds=22, model="copy", timeout=10)
    time.sleep(3)
    scaled_at = time.monotonic()
    # TorchServe 0.12 may answer a scale-down or an unregister under load with a 500 from one of its races: retried
    scaled = retried_on_races(lambda: server.request("PUT", f"{management}/models/copy?min_worker=1&max_worker=1&synchronous=true", "management", timeout=120), (200,))
    scale_done = time.monotonic()
    time.sleep(4)
    removed_at = time.monotonic()
    removed = retried_on_races(lambda: server.request("DELETE", f"{management}/models/copy", "management", timeout=120), (200, 404))
    remove_done = time.monotonic()
    thread.join(90)
    outcomes = result[0]
    assert scaled.status_code == 200, scaled.text
    assert removed.status_code in (200, 404), removed.text
    lost = [o for o in outcomes if o.status == 0 or o.status >= 500]
    near_an_event = lambda o: any(begin - 1 <= o.started <= end + 1 for begin, end in ((scaled_at, scale_done), (removed_at, remove_done)))  # noqa: E731
    assert all(o.hung or 500 <= o.status < 600 for o in lost), sorted({(o.status, o.error) for o in lost})
    assert all(near_an_event(o) for o in lost), [(round(o.started - scaled_at, 2), o.status, o.error) for o in lost]
    assert len(lost) <= 2 * 6, f"{len(lost)} lost"
    assert {o.status for o in outcomes} <= {0, 200, 404, 500, 503, 507}
    assert not correct(outcomes, reference_classifier)
    late = [o for o in outcomes if o.started > remove_done + 1]
    assert late and all(o.status == 404 and o.seconds < 5 for o in late), sorted({(o.status, round(o.seconds, 1)) for o in late})
    summary = f"{len(outcomes)} requests, {len(lost)} lost ({sum(o.hung for o in lost)} unanswered), {len(late)} x 404 after unregister"
    record_property("scale_down_unregister", summary)
    print(f"\nscale down + unregister under load: {summary}")
    assert server.predict("the first model still answers").status_code == 200


def test_stop_during_load_exits_cleanly_and_leaves_no_worker(tiny_model_store, tmp_path):
    instance = TorchServe(workdir=tmp_path, model_store=tiny_model_store).start()
    processes = list(instance.process_tree)
    thread, result = in_background(run_load, instance, TEXTS, 4, seconds=10, timeout=30)
    time.sleep(3)
    survivors = instance.stop(timeout=60)
    thread.join(90)
    assert survivors == []
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    outcomes = result[0]
    assert not [o for o in outcomes if o.hung], "a request hung across the stop"
    assert {o.status for o in outcomes} <= {0, 200, 500, 503}
