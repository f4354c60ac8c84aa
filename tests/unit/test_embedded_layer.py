"""The embedded channel layer keeps Channels' in-memory semantics, sweeping expiry less often."""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import ChannelFull

from rtcsite.layers import EmbeddedChannelLayer


async def test_send_receive_and_groups_work_as_in_channels() -> None:
    layer = EmbeddedChannelLayer()
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", a)
    await layer.group_add("room", b)
    await layer.group_send("room", {"type": "hello"})
    assert await layer.receive(a) == {"type": "hello"}
    assert await layer.receive(b) == {"type": "hello"}
    await layer.send(a, {"type": "direct"})
    assert await layer.receive(a) == {"type": "direct"}


async def test_expiry_is_swept_at_most_once_per_interval() -> None:
    layer = EmbeddedChannelLayer(expiry=-1, clean_interval=3600)  # every message born expired
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", first)
    await layer.send(first, {"type": "never read"})
    await layer.group_send("room", {"type": "x"})  # the first sweep runs at once
    assert first not in layer.channels and first not in layer.groups.get("room", {})

    await layer.group_add("room", second)
    await layer.send(second, {"type": "never read"})
    await layer.group_send("room", {"type": "y"})  # within the interval: no sweep (the saving)
    assert layer.channels[second].qsize() == 2

    layer._next_clean = 0.0  # the interval has passed
    await layer.group_send("room", {"type": "z"})
    assert second not in layer.channels and second not in layer.groups.get("room", {})


async def test_capacity_raises_on_send_and_drops_on_group_send() -> None:
    layer = EmbeddedChannelLayer(capacity=2)
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.send(channel, {"type": "one"})
    await layer.group_send("room", {"type": "two"})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "three"})
    await layer.group_send("room", {"type": "dropped"})  # a full member is skipped
    assert [await layer.receive(channel) for _ in range(2)] == [{"type": "one"}, {"type": "two"}]
    assert channel not in layer.channels  # drained: nothing left behind


async def test_messages_are_copies() -> None:
    layer = EmbeddedChannelLayer()
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", a)
    await layer.group_add("g", b)
    message = {"type": "m", "data": {"n": 1}}
    await layer.group_send("g", message)
    got_a = await layer.receive(a)
    got_a["data"]["n"] = 2
    assert await layer.receive(b) == {"type": "m", "data": {"n": 1}}
    assert message["data"]["n"] == 1


async def test_waiting_receiver_gets_message_and_cancelled_one_loses_nothing() -> None:
    layer = EmbeddedChannelLayer()
    channel = await layer.new_channel()
    first = asyncio.ensure_future(layer.receive(channel))
    second = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)  # both wait
    await layer.send(channel, {"type": "only"})  # wakes the first ...
    first.cancel()  # ... which is cancelled before it runs: the second must get the message
    assert await asyncio.wait_for(second, 5) == {"type": "only"}
    assert first.cancelled()
    assert channel not in layer.channels


async def test_an_idle_receiver_holds_no_queue() -> None:
    layer = EmbeddedChannelLayer()
    channel = await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    inbox = layer.channels[channel]
    assert inbox.items is None and len(inbox.waiters) == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert channel not in layer.channels
