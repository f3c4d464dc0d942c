"""An asyncio micro-batcher: concurrent requests share one call of a batch function.

A request on an idle batcher is dispatched at once (as Triton's dynamic batcher does with preferred
sizes; TorchServe 0.12 always holds it for at least 1 ms). While `max_in_flight` batches run,
new requests queue; each finished batch frees a slot and the next batch takes everything queued,
up to `max_batch_texts` texts. `max_delay_ms` > 0 additionally waits that long for more requests
when a batch is not full (0, the default, never waits).

Each request is a list of texts and gets back one result per text, in order. A batch function that
raises fails only the requests of that batch, with the same exception.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass(frozen=True)
class BatchingSettings:
    """How a server batches: texts per batch, batches computed at once, and the wait for a fuller batch."""

    max_batch_texts: int = 32
    max_in_flight: int = 2
    max_delay_ms: float = 0.0


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Batches concurrent `submit` calls into calls of `batch_function(texts) -> results`, run in threads."""

    def __init__(self, batch_function: Callable[[list[str]], Sequence], max_batch_texts: int = 32, max_delay_ms: float = 0.0, max_in_flight: int = 1):
        if max_batch_texts < 1 or max_in_flight < 1 or max_delay_ms < 0:
            raise ValueError("max_batch_texts and max_in_flight must be >= 1 and max_delay_ms >= 0")
        self.batch_function = batch_function
        self.max_batch_texts = max_batch_texts
        self.max_delay_s = max_delay_ms / 1000
        self.max_in_flight = max_in_flight
        self._queue: asyncio.Queue[_Pending] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._runner: asyncio.Task | None = None
        self._carry: _Pending | None = None

    async def submit(self, texts: list[str]) -> list:
        """Results for `texts`, computed together with whatever else is queued."""
        if self._runner is None or self._runner.done():
            self._queue, self._slots = asyncio.Queue(), asyncio.Semaphore(self.max_in_flight)
            self._runner = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(list(texts), future))
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
        batch, texts = [first], len(first.texts)
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
            if texts + len(pending.texts) > self.max_batch_texts:
                self._carry = pending  # starts the next batch: requests are never split
                break
            batch.append(pending)
            texts += len(pending.texts)
        return batch

    async def _dispatch(self, batch: list[_Pending]) -> None:
        texts = [text for pending in batch for text in pending.texts]
        try:
            results = await asyncio.get_running_loop().run_in_executor(None, self.batch_function, texts)
        except Exception as error:  # fail this batch's requests only
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
        else:
            offset = 0
            for pending in batch:
                if not pending.future.done():  # a client that went away cancelled its future
                    pending.future.set_result(list(results[offset : offset + len(pending.texts)]))
                offset += len(pending.texts)
        finally:
            self._slots.release()
