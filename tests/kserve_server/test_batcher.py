"""MicroBatcher: a lone request runs at once, concurrent ones share batches within the bounds, requests are
never split, results return in order, and a failing batch fails only its own requests."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from kserve_server.batcher import MicroBatcher


class RecordingFunction:
    """Upper-cases texts after `seconds`; records each batch; raises on a text "boom"."""

    def __init__(self, seconds: float = 0.0):
        self.seconds, self.batches, self.lock = seconds, [], threading.Lock()

    def __call__(self, texts: list[str]) -> list[str]:
        with self.lock:
            self.batches.append(list(texts))
        time.sleep(self.seconds)
        if "boom" in texts:
            raise RuntimeError("backend exploded")
        return [text.upper() for text in texts]


def test_a_lone_request_is_dispatched_at_once():
    async def scenario():
        function = RecordingFunction()
        batcher = MicroBatcher(function, max_batch_texts=32, max_delay_ms=0)
        start = time.perf_counter()
        result = await batcher.submit(["hello"])
        await batcher.close()
        return result, time.perf_counter() - start, function.batches

    result, seconds, batches = asyncio.run(scenario())
    assert result == ["HELLO"] and batches == [["hello"]]
    assert seconds < 0.05, f"a lone request waited {seconds * 1000:.1f} ms"


def test_requests_queued_behind_a_running_batch_share_the_next_one_in_order():
    async def scenario():
        function = RecordingFunction(seconds=0.05)
        batcher = MicroBatcher(function, max_batch_texts=8, max_in_flight=1)
        first = asyncio.create_task(batcher.submit(["t0", "u0"]))
        await asyncio.sleep(0.01)  # the first request's batch is running; the rest queue behind it
        rest = [asyncio.create_task(batcher.submit([f"t{i}", f"u{i}"])) for i in range(1, 10)]
        results = [await first] + [await task for task in rest]
        await batcher.close()
        return results, function.batches

    results, batches = asyncio.run(scenario())
    assert results == [[f"T{i}", f"U{i}"] for i in range(10)]
    assert batches[0] == ["t0", "u0"]  # the first request did not wait for company
    assert all(len(batch) <= 8 for batch in batches) and max(len(batch) for batch in batches) == 8
    assert all(len(batch) % 2 == 0 for batch in batches)  # no request split across batches
    assert sum(len(batch) for batch in batches) == 20


def test_max_in_flight_runs_batches_concurrently():
    async def scenario():
        function = RecordingFunction(seconds=0.2)
        batcher = MicroBatcher(function, max_batch_texts=1, max_in_flight=2)
        start = time.perf_counter()
        await asyncio.gather(batcher.submit(["a"]), batcher.submit(["b"]))
        await batcher.close()
        return time.perf_counter() - start

    assert asyncio.run(scenario()) < 0.35  # two 0.2 s batches side by side


def test_a_failing_batch_fails_only_its_own_requests():
    async def scenario():
        function = RecordingFunction(seconds=0.05)
        batcher = MicroBatcher(function, max_batch_texts=1, max_in_flight=1)
        outcomes = await asyncio.gather(batcher.submit(["fine"]), batcher.submit(["boom"]), batcher.submit(["x"]), batcher.submit(["y"]), return_exceptions=True)
        after = await batcher.submit(["still working"])
        await batcher.close()
        return outcomes, after

    outcomes, after = asyncio.run(scenario())
    assert outcomes[0] == ["FINE"] and outcomes[2:] == [["X"], ["Y"]]
    assert isinstance(outcomes[1], RuntimeError) and "exploded" in str(outcomes[1])
    assert after == ["STILL WORKING"]


def test_settings_are_checked():
    with pytest.raises(ValueError):
        MicroBatcher(RecordingFunction(), max_batch_texts=0)


def test_a_full_queue_refuses_new_requests_at_once_and_loses_none_already_queued():
    from handler.errors import Overloaded

    async def scenario():
        function = RecordingFunction(seconds=0.05)
        batcher = MicroBatcher(function, max_batch_texts=4, max_in_flight=1, max_queued=6)
        accepted = [asyncio.create_task(batcher.submit([f"t{i}", f"u{i}"])) for i in range(3)]  # 6 texts wait
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="already waiting"):
            await batcher.submit(["one", "too many"])
        results = [await task for task in accepted]
        after = await batcher.submit(["later"])  # the queue drained: accepted again
        await batcher.close()
        return results, after

    results, after = asyncio.run(scenario())
    assert results == [[f"T{i}", f"U{i}"] for i in range(3)] and after == ["LATER"]
