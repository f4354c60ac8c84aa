"""The embedded channel layer keeps Channels' in-memory semantics, sweeping expiry less often."""

from __future__ import annotations

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
