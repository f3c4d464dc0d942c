"""An asyncio micro-batcher: concurrent submissions share one call of a batch function.

A request on an idle batcher is dispatched at once (as Triton's dynamic batcher does with preferred
sizes; TorchServe 0.12 always holds it for at least 1 ms). While `max_in_flight` batches run,
new requests queue; each finished batch frees a slot and the next batch takes everything queued,
up to `max_batch_texts` texts. `max_delay_ms` > 0 additionally waits that long for more requests
when a batch is not full (0, the default, never waits).

Each submission is a list of items (the KServe door's: decoded requests, weighed by their texts) and
gets back one result per item, in order. A batch function that raises fails only the submissions of that
batch, with the same exception. When more than `max_queued` items' weight waits, `submit` refuses with
`Overloaded` at once (a 503 / UNAVAILABLE the load balancer can retry elsewhere) instead of queueing
without bound.

The batch function runs in a thread pool, up to `max_in_flight` at once; it must be safe to call from
several threads (`handler.service.ClassifierService.run` is: backends that cannot run two calls at once
take their lock, handler/backends/registry.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from handler.errors import Overloaded


#: batches in flight on a GPU (the KServe server's default with --gpu-id): on an H200 with the default model,
#: 4 gave 2.4-3.3x the requests/s of 1 and 1.5x of 2, p99 17-19 ms instead of 44-51 ms; 8 and 16 added
#: under 15% more (bench/results/h200_door/)
GPU_MAX_IN_FLIGHT = 4


@dataclass(frozen=True)
class BatchingSettings:
    """How a server batches: texts per batch, batches computed at once, the wait for a fuller batch, and
    how many texts may wait before new requests are refused."""

    max_batch_texts: int = 32
    max_in_flight: int = 2
    max_delay_ms: float = 0.0
    max_queued_texts: int = 4096


@dataclass
class _Pending:
    items: list
    weight: int
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Batches concurrent `submit` calls into calls of `batch_function(items) -> results`, run in threads.
    `weight(item)` is what an item counts against `max_batch_texts` and `max_queued` (default 1)."""

    def __init__(
        self, batch_function: Callable[[list], Sequence], max_batch_texts: int = 32, max_delay_ms: float = 0.0, max_in_flight: int = 1,
        weight: Callable[[object], int] = lambda item: 1, max_queued: int | None = None,
    ):  # fmt: skip
        if max_batch_texts < 1 or max_in_flight < 1 or max_delay_ms < 0 or (max_queued is not None and max_queued < 1):
            raise ValueError("max_batch_texts, max_in_flight and max_queued must be >= 1 and max_delay_ms >= 0")
        self.batch_function = batch_function
        self.max_batch_texts = max_batch_texts
        self.max_delay_s = max_delay_ms / 1000
        self.max_in_flight = max_in_flight
        self.weight = weight
        self.max_queued = max_queued
        #: weight submitted and not yet dispatched
        self.queued = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._runner: asyncio.Task | None = None
        self._carry: _Pending | None = None

    async def submit(self, items: list) -> list:
        """Results for `items`, computed together with whatever else is queued; `Overloaded` when the queue is full."""
        weight = sum(self.weight(item) for item in items)
        if self.max_queued is not None and self.queued + weight > self.max_queued:
            raise Overloaded(f"{self.queued} texts are already waiting (max_queued_texts {self.max_queued}): retry later or on another replica")
        if self._runner is None or self._runner.done():
            self._queue, self._slots = asyncio.Queue(), asyncio.Semaphore(self.max_in_flight)
            self._runner = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        self.queued += weight
        await self._queue.put(_Pending(list(items), weight, future))
        return await future

    async def close(self) -> None:
        """Stop taking batches (requests already dispatched finish)."""
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
            self._runner = None

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            batch = await self._next_batch()
            asyncio.create_task(self._dispatch(batch))

    async def _next_batch(self) -> list[_Pending]:
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, texts = [first], first.weight
        deadline = time.perf_counter() + self.max_delay_s
        while texts < self.max_batch_texts:
            try:
                pending = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    pending = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if texts + pending.weight > self.max_batch_texts:
                self._carry = pending  # starts the next batch: requests are never split
                break
            batch.append(pending)
            texts += pending.weight
        self.queued -= texts
        return batch

    async def _dispatch(self, batch: list[_Pending]) -> None:
        items = [item for pending in batch for item in pending.items]
        try:
            results = await asyncio.get_running_loop().run_in_executor(None, self.batch_function, items)
        except Exception as error:  # fail this batch's requests only
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
        else:
            offset = 0
            for pending in batch:
                if not pending.future.done():  # a client that went away cancelled its future
                    pending.future.set_result(list(results[offset : offset + len(pending.items)]))
                offset += len(pending.items)
        finally:
            self._slots.release()
