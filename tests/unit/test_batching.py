"""The batching primitive's contract (rtcsite/batching.py), and the lobby fan-out built on it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from presence import services
from rtcsite.batching import Batcher


class Sender:
    """A ``send`` that records its batches and can be held in flight until released."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.gate = asyncio.Event()
        if not hold:
            self.gate.set()
        self.entered = asyncio.Event()
        self.failures: dict[int, Exception] = {}  # batch number -> what send raises

    async def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.entered.set()
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        if len(self.batches) - 1 in self.failures:
            raise self.failures[len(self.batches) - 1]
        return list(items)

    def release(self) -> None:
        self.gate.set()


async def in_flight(
    send: Sender, batcher: Batcher[str, str], *items: str
) -> list[asyncio.Future[str]]:
    """Call with ``items`` and wait until their batch is in ``send`` (held there)."""
    calls = [asyncio.ensure_future(batcher.call(item)) for item in items]
    await send.entered.wait()
    return calls


async def settle() -> None:
    """Let every ready task run (a few loop turns, no timer)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_lone_call_goes_out_at_once() -> None:
    send = Sender()
    batcher: Batcher[str, str] = Batcher(send)
    assert await asyncio.wait_for(batcher.call("a"), 0.5) == "a"
    assert send.batches == [["a"]]


async def test_calls_during_a_batch_go_out_together_next_in_order() -> None:
    send = Sender(hold=True)
    batcher: Batcher[str, str] = Batcher(send)
    [first] = await in_flight(send, batcher, "a")
    rest = [asyncio.ensure_future(batcher.call(x)) for x in "bcd"]
    await settle()
    assert send.batches == [["a"]]  # one batch in flight; the rest wait for it
    send.release()
    assert await first == "a"
    assert await asyncio.gather(*rest) == ["b", "c", "d"]
    assert send.batches == [["a"], ["b", "c", "d"]]
    assert send.most_in_flight == 1


async def test_queued_items_go_out_without_a_further_call() -> None:
    """The lobby bug: items queued while a batch is in flight must not wait for a later
    call; ``submit`` (nobody awaits) is where it bit."""
    send = Sender(hold=True)
    batcher: Batcher[str, None] = Batcher(send)
    batcher.submit("a")
    await send.entered.wait()
    batcher.submit("b")
    batcher.submit("c")
    send.release()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if len(send.batches) == 2:
            break
    assert send.batches == [["a"], ["b", "c"]]


async def test_an_item_error_reaches_its_caller_only() -> None:
    async def send(items: list[Any]) -> list[Any]:
        return [ValueError(x) if x.startswith("bad") else x.upper() for x in items]

    batcher: Batcher[str, str] = Batcher(send)
    results = await asyncio.gather(
        *(batcher.call(x) for x in ["ok", "bad1", "fine"]), return_exceptions=True
    )
    assert results[0] == "OK" and results[2] == "FINE"
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad1"


async def test_a_failed_batch_fails_its_callers_only_and_the_next_goes_out() -> None:
    send = Sender(hold=True)
    batcher: Batcher[str, str] = Batcher(send)
    send.failures = {0: ConnectionError("link down"), 2: TimeoutError("slow")}
    first = await in_flight(send, batcher, "a", "b")
    second = [asyncio.ensure_future(batcher.call(x)) for x in "cd"]
    await settle()
    send.release()
    assert [type(r) for r in await asyncio.gather(*first, return_exceptions=True)] == [
        ConnectionError,
        ConnectionError,
    ]
    assert await asyncio.gather(*second) == ["c", "d"]  # the batch behind: untouched
    with pytest.raises(TimeoutError):
        await batcher.call("e")  # each failed batch reaches its own callers
    assert await batcher.call("f") == "f"  # and the batcher carries on
    assert send.batches == [["a", "b"], ["c", "d"], ["e"], ["f"]]


async def test_wrong_result_count_is_a_batch_error() -> None:
    async def send(items: list[str]) -> list[str]:
        return []

    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await Batcher(send).call("x")


async def test_a_caller_cancelled_before_its_batch_is_left_out() -> None:
    send = Sender(hold=True)
    batcher: Batcher[str, str] = Batcher(send)
    [first] = await in_flight(send, batcher, "a")
    gone = asyncio.ensure_future(batcher.call("gone"))
    kept = asyncio.ensure_future(batcher.call("kept"))
    await settle()
    gone.cancel()
    send.release()
    assert await first == "a" and await kept == "kept"
    assert gone.cancelled()
    assert send.batches == [["a"], ["kept"]]


async def test_a_caller_cancelled_in_flight_loses_its_result_only() -> None:
    send = Sender(hold=True)
    batcher: Batcher[str, str] = Batcher(send)
    a, b = await in_flight(send, batcher, "a", "b")
    a.cancel()
    await settle()
    send.release()
    assert await b == "b"
    assert a.cancelled()
    assert send.batches == [["a", "b"]]
    assert await batcher.call("c") == "c"


async def test_cancelling_the_batcher_task_cancels_every_waiting_caller() -> None:
    send = Sender(hold=True)
    batcher: Batcher[str, str] = Batcher(send)
    [sent] = await in_flight(send, batcher, "a")
    queued = asyncio.ensure_future(batcher.call("b"))
    await settle()
    assert batcher._task is not None
    batcher._task.cancel()
    await settle()
    assert sent.cancelled() and queued.cancelled()
    send.release()
    assert await batcher.call("c") == "c"  # a later call starts afresh


async def test_a_submitted_item_that_fails_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def send(items: list[str]) -> None:
        raise ConnectionError("nobody hears this")

    batcher: Batcher[str, None] = Batcher(send)
    with caplog.at_level(logging.ERROR, logger="rtcsite.batching"):
        batcher.submit("x")
        await settle()
    assert "batch failed" in caplog.text and "nobody hears this" in caplog.text


async def test_pacing_sends_a_burst_at_once_then_one_batch_per_interval() -> None:
    interval = 0.2
    loop = asyncio.get_running_loop()
    sent_at: list[tuple[float, list[str]]] = []

    async def send(items: list[str]) -> None:
        sent_at.append((loop.time(), list(items)))

    batcher: Batcher[str, None] = Batcher(send, interval=interval, burst=2)
    start = loop.time()
    for item in "abcdef":
        batcher.submit(item)
        await settle()  # each on its own loop turn: no two share a batch by accident
    await asyncio.sleep(interval * 1.5)
    assert [items for _, items in sent_at] == [["a"], ["b"], ["c", "d", "e", "f"]]
    assert sent_at[1][0] - start < interval / 2  # the first two at once
    assert sent_at[2][0] - start >= interval * 0.95  # the rest at the window's end
    batcher.submit("g")  # quiet again: at once
    await settle()
    await asyncio.sleep(interval * 1.1)
    batcher.submit("h")  # a new window: at once
    await settle()
    assert [items for _, items in sent_at[3:]] == [["g"], ["h"]]


# --- the lobby fan-out (presence.services.LobbyBatcher) -------------------------------------
class SlowLayer:
    """A channel layer whose ``group_send`` takes as long as the test says."""

    def __init__(self) -> None:
        self.sends: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert group == services.LOBBY_GROUP and message["type"] == "lobby.frames"
        self.sends.append(list(message["frames"]))
        self.entered.set()
        await self.gate.wait()


@pytest.fixture
def slow_layer(monkeypatch: pytest.MonkeyPatch) -> SlowLayer:
    layer = SlowLayer()
    monkeypatch.setattr(services, "get_channel_layer", lambda: layer)
    return layer


async def test_lobby_deltas_queued_during_a_slow_group_send_go_out_right_after(
    slow_layer: SlowLayer,
) -> None:
    """Regression: they used to wait for the next presence event on the process (a lobby
    page missed 10 peers for 22 s with two processes and Redis)."""
    lobby = services.LobbyBatcher(interval=0.05)
    slow_layer.gate.clear()
    lobby.add("d1")
    await slow_layer.entered.wait()  # group_send in flight ...
    for frame in ("d2", "d3", "d4"):
        lobby.add(frame)  # ... while these arrive
    slow_layer.gate.set()
    for _ in range(100):  # no further add: they must go out on their own
        await asyncio.sleep(0.01)
        if len(slow_layer.sends) >= 2:
            break
    assert slow_layer.sends == [["d1"], ["d2", "d3", "d4"]]


async def test_lobby_sends_first_deltas_at_once_and_coalesces_a_burst(
    slow_layer: SlowLayer,
) -> None:
    interval = 0.2
    lobby = services.LobbyBatcher(interval=interval)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(8):
        lobby.add(f"d{i}")
        await settle()
    assert slow_layer.sends[:2] == [["d0"], ["d1"]]  # at once: no delay on a quiet site
    assert loop.time() - start < interval
    await asyncio.sleep(interval * 1.5)
    assert slow_layer.sends[2:] == [[f"d{i}" for i in range(2, 8)]]  # one send for the rest
