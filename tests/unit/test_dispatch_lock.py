"""The consumer's dispatch lock: one holder at a time, FIFO, cancellation never strands it."""

from __future__ import annotations

import asyncio

import pytest

from rtcsite.ws.consumer import DispatchLock


async def test_one_holder_at_a_time_in_arrival_order() -> None:
    lock = DispatchLock()
    order: list[str] = []
    inside = 0

    async def worker(name: str) -> None:
        nonlocal inside
        async with lock:
            inside += 1
            assert inside == 1
            order.append(name)
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(worker(n) for n in "abcd"))
    assert order == list("abcd")
    assert not lock.locked and lock.waiters is None  # nothing kept after contention


async def test_a_waiter_cancelled_after_being_handed_the_lock_passes_it_on() -> None:
    lock = DispatchLock()
    await lock.__aenter__()
    second = asyncio.ensure_future(lock.__aenter__())
    third = asyncio.ensure_future(lock.__aenter__())
    await asyncio.sleep(0)  # both wait
    await lock.__aexit__(None, None, None)  # handed to the second ...
    second.cancel()  # ... which leaves before it runs
    with pytest.raises(asyncio.CancelledError):
        await second
    await asyncio.wait_for(third, 5)  # the third holds it now
    assert lock.locked
    await lock.__aexit__(None, None, None)
    assert not lock.locked and lock.waiters is None


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    lock = DispatchLock()
    await lock.__aenter__()
    waiting = asyncio.ensure_future(lock.__aenter__())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert lock.waiters is None
    await lock.__aexit__(None, None, None)
    assert not lock.locked
