"""Dynamic batching: many callers' items, one model run, results fanned back out.

One worker task takes the first queued item and everything already waiting (up to
``max_batch``).  If that found company, other callers are active, so it waits up to
``max_delay_ms`` for more before running; a lone caller never pays the delay.  While a
batch runs in the thread pool, new items queue up and form the next batch, so batches
grow with load on their own.

The batch function runs in a thread and returns one entry per item: a result, or the
exception for that item only (one caller's bad input does not fail its neighbours).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from daemon.core.errors import Unavailable
from daemon.core.i18n import t

T = TypeVar("T")
R = TypeVar("R")

@dataclass(slots=True)
class BatchStats:
    """Counts of batches run, for a module's describe(); ``largest`` is the biggest batch seen."""

    batches: int = 0
    items: int = 0
    largest: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The counts plus ``mean_size`` (items per batch, 2 decimals; 0.0 before the first batch)."""
        mean = self.items / self.batches if self.batches else 0.0
        return {"batches": self.batches, "items": self.items, "largest": self.largest,
                "mean_size": round(mean, 2)}


class DynamicBatcher(Generic[T, R]):
    """Collects ``submit``-ted items into batches for ``fn``; an async context manager."""

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R | BaseException]],
        executor: concurrent.futures.Executor,
        max_batch: int = 32,
        max_delay_ms: float = 2.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._fn = fn
        self._executor = executor
        self.max_batch = max_batch
        self.max_delay = max(0.0, max_delay_ms) / 1000
        self._logger = logger or logging.getLogger(__name__)
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    async def __aenter__(self) -> DynamicBatcher[T, R]:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the worker task on the running loop; a no-op when it already runs."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="dynamic-batcher")

    async def aclose(self) -> None:
        """Stop the worker; callers still queued get UNAVAILABLE rather than hanging."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # our caller is being cancelled too: that is not ours to swallow
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(Unavailable(t("errors.batching.module_stopping")))

    async def submit(self, item: T) -> R:
        """``item``'s result from a coming batch, or the exception for it; UNAVAILABLE when not running or stopping."""
        if self._worker is None or self._worker.done():
            raise Unavailable(t("errors.batching.batcher_not_running"))
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _collect(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        """Fill ``batch`` (owned by the caller, so a cancelled wait loses no caller)."""
        batch.append(await self._queue.get())
        # one turn of the loop: callers resumed by the previous batch's results re-submit now, so
        # they join this batch instead of trailing behind it one by one (a lone caller loses ~10 us)
        await asyncio.sleep(0)
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if 1 < len(batch) < self.max_batch and self.max_delay > 0:
            deadline = asyncio.get_running_loop().time() + self.max_delay
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    while len(batch) < self.max_batch:
                        batch.append(await self._queue.get())

    async def _run(self) -> None:
        while True:
            batch: list[tuple[T, asyncio.Future[R]]] = []
            try:
                await self._collect(batch)
                live = [(item, fut) for item, fut in batch if not fut.done()]
                if live:  # else every caller in it was cancelled while it waited
                    await self._run_batch(live)
            except asyncio.CancelledError:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(Unavailable(t("errors.batching.module_stopping")))
                raise

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        results: Sequence[R | BaseException]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._fn, items)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the whole batch failed: every caller in it hears why
            self._logger.exception("batch of %d failed", len(items))
            results = [exc] * len(items)
        if len(results) != len(items):
            results = [RuntimeError(f"batch gave {len(results)} results for {len(items)} items")] * len(items)
        self.stats.batches += 1
        self.stats.items += len(items)
        self.stats.largest = max(self.stats.largest, len(items))
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():  # its caller gave up while the batch ran
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
