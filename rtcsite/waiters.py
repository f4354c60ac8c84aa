"""A FIFO of waiting futures that exists only while somebody waits.

A process holds tens of thousands of mostly idle sockets, and ``asyncio.Lock`` /
``asyncio.Queue`` keep their deques (and more) for life once used. The consumer's dispatch
lock (``rtcsite/ws/consumer.py``) and the embedded layer's inbox (``rtcsite/layers.py``)
wait here instead: a list made on the first wait and dropped when empty.
"""

from __future__ import annotations

import asyncio


class Waiters:
    """Base for the two: ``wait()`` until ``wake_one()``; ``pass_on()`` says what a
    waiter that was woken but is leaving anyway (cancelled) hands to the next one."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[None]] | None = None

    async def wait(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.waiters is None:
            self.waiters = []
        self.waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if self.waiters and waiter in self.waiters:
                self.waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self.pass_on()  # woken, but leaving: the wake-up must not be lost
            raise
        finally:
            if not self.waiters:
                self.waiters = None

    def wake_one(self) -> bool:
        """Wake the longest waiting; False if nobody is waiting."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def pass_on(self) -> None:
        raise NotImplementedError
