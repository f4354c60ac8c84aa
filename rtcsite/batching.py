"""Batching: calls that arrive while a batch is in flight go out together as the next batch.

One mechanism for three places that pay a fixed cost per round trip: the Redis presence
backend (one pipeline instead of one command per call), the room reader (one ``slug IN
(...)`` query and one thread hop for a burst of connects) and the lobby fan-out (one
``group_send`` for many deltas). A lone call goes out at once, there is no timer, so idle
latency is unchanged; under load each round trip carries whatever queued during the last.

Guarantees of ``Batcher``:

* **Order.** Items reach ``send`` in the order they were queued; batches go out in order.
* **One batch in flight.** ``send`` is never entered again before it has returned.
* **Progress.** Items queued while a batch is in flight go out as soon as it returns,
  without waiting for a further call: nothing depends on a later, unrelated event.
* **Errors.** ``send`` returns one result per item; an ``Exception`` instance in that list
  is raised in that item's caller only. If ``send`` raises, every caller of that batch gets
  the exception, nobody else does, and the next batch goes out as usual. A failure with no
  caller waiting (``submit``) is logged.
* **Cancellation.** A caller cancelled before its batch goes out is left out of it; once its
  batch is in flight the item is processed and its result dropped. Cancelling the batcher's
  task (event loop shutdown) cancels every caller still waiting.
* **Pacing** (optional, ``interval`` > 0): at most ``burst`` batches per ``interval``; a
  further batch waits for the window's end and takes everything that arrived meanwhile.

Limits: no I/O of its own and no bound on a batch's size (callers bound their own rate);
one event loop at a time (the task sending batches runs on the loop of the call that
started it, and ends when nothing is queued).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Sends one batch; returns one result (or ``Exception``) per item, or None for "all None".
Send = Callable[[list[T]], Awaitable[Sequence[Any] | None]]


class Batcher(Generic[T, R]):
    """Queue items; one task hands them to ``send`` in batches (see the module docstring)."""

    def __init__(self, send: Send[T], *, interval: float = 0.0, burst: int = 1) -> None:
        self.send = send
        self.interval = interval
        self.burst = burst
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R] | None] = []  # None: nobody waits (submit)
        self._task: asyncio.Task[None] | None = None
        self._window_start = -math.inf
        self._sent_in_window = 0

    async def call(self, item: T) -> R:
        """Queue ``item`` and wait for its result (or its error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await future

    def submit(self, item: T) -> None:
        """Queue ``item`` without waiting for it (from a coroutine: needs a running loop)."""
        self._items.append(item)
        self._futures.append(None)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        futures: list[asyncio.Future[R] | None] = []
        try:
            while self._items:
                if self.interval > 0:
                    await self._pace()
                items, futures = self._take()
                if not items:
                    continue
                try:
                    results = await self.send(items)
                    if results is not None and len(results) != len(items):
                        raise RuntimeError(f"{len(results)} results for {len(items)} items")
                except Exception as exc:
                    _fail(futures, exc)
                    continue
                _deliver(futures, results)
        except BaseException:  # cancelled (loop shutdown): nobody may wait forever
            for future in [*futures, *self._futures]:
                if future is not None:
                    future.cancel()
            self._items, self._futures = [], []
            raise

    def _take(self) -> tuple[list[T], list[asyncio.Future[R] | None]]:
        """Everything queued, less the items whose caller has given up."""
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        if any(f is not None and f.cancelled() for f in futures):
            kept = [
                (i, f)
                for i, f in zip(items, futures, strict=True)
                if f is None or not f.cancelled()
            ]
            items, futures = [i for i, _ in kept], [f for _, f in kept]
        return items, futures

    async def _pace(self) -> None:
        """Hold the next batch while ``burst`` batches went out in this ``interval``."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._window_start >= self.interval:
            self._window_start, self._sent_in_window = now, 0
        elif self._sent_in_window >= self.burst:
            await asyncio.sleep(self._window_start + self.interval - now)
            self._window_start, self._sent_in_window = loop.time(), 0
        self._sent_in_window += 1


def _deliver(futures: Sequence[asyncio.Future[Any] | None], results: Sequence[Any] | None) -> None:
    for i, future in enumerate(futures):
        result = None if results is None else results[i]
        if future is None:
            if isinstance(result, Exception):
                logger.error("batched item failed (nobody waiting)", exc_info=result)
        elif future.done():  # the caller was cancelled while its batch was in flight
            continue
        elif isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


def _fail(futures: Sequence[asyncio.Future[Any] | None], exc: Exception) -> None:
    """The batch failed as a whole: its callers (only) get ``exc``."""
    for future in futures:
        if future is not None and not future.done():
            future.set_exception(exc)
    if None in futures:
        logger.error("batch failed (%d items, nobody waiting for some)", len(futures), exc_info=exc)
