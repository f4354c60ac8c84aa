"""Presence services: join/leave/heartbeat a room and tell everyone who needs to know.

Consumers call these; the backend (memory or Redis) stores who is where, and the
channel layer carries the deltas: to the room's group (``peer-joined``/``peer-left`` for
the people in it) and to the ``lobby`` group (room cards update live). Leaves caused by
expiry (a crashed process, a vanished client) go through the same ``announce_left`` as
clean leaves, so clients cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from presence.backends import get_backend
from presence.backends.base import PeerInfo, Presence
from presence.sweeper import sweep_forever
from rtcsite.batching import Batcher
from rtcsite.process import PROCESS_ID

logger = logging.getLogger(__name__)

LOBBY_GROUP = "lobby"


def room_group(slug: str) -> str:
    return f"room.{slug}"


def public_peer(presence: Presence) -> dict[str, Any]:
    """What other participants and the lobby may see of a presence (no channel names)."""
    return {
        "peer": presence.peer_id,
        "user": presence.user_id,
        "name": presence.name,
        "joined_at": presence.joined_at,
        "media": presence.media,
    }


async def join(
    room: str,
    peer_id: str,
    *,
    channel: str,
    user_id: str,
    name: str,
    capacity: int | None,
    media: dict[str, bool] | None = None,
) -> tuple[Presence, list[Presence]]:
    """Track a peer in a room (capacity enforced atomically) and announce it; returns its
    presence and the room's members as of the join, this one included (one backend round
    trip). Raises ``RoomFull`` when the room has no place; nothing is announced then."""
    ensure_sweeper()
    peer = PeerInfo(user_id=user_id, name=name, process=PROCESS_ID, channel=channel, media=media)
    presence, members = await get_backend().track_and_list(room, peer_id, peer, capacity=capacity)
    await _announce(presence, "join", count=len(members))
    return presence, members


async def leave(room: str, peer_id: str) -> Presence | None:
    """Untrack and announce; ``None`` (and no announcement) if it was already gone."""
    presence, count = await get_backend().untrack_and_count(room, peer_id)
    if presence is not None:
        await _announce(presence, "leave", count=count)
    return presence


async def heartbeat(room: str, peer_id: str) -> bool:
    """Refresh a presence; ``False`` if it had expired (the caller re-joins)."""
    return await get_backend().refresh(room, peer_id)


async def set_media(room: str, peer_id: str, media: dict[str, bool]) -> Presence | None:
    presence = await get_backend().update_media(room, peer_id, media)
    if presence is not None:
        await get_channel_layer().group_send(
            room_group(room),
            {
                "type": "presence.media",
                "presence": presence.as_dict(),
                "peer": public_peer(presence),
            },
        )
    return presence


async def members(room: str) -> list[Presence]:
    return await get_backend().list_room(room)


async def lobby_snapshot() -> dict[str, dict[str, Any]]:
    """Every occupied room the lobby lists with its count and participants, for a new lobby
    client (idle visitor rooms are not listed: ``rooms.services.list_rooms``)."""
    from rooms.services import aunlisted_rooms

    occupied = await get_backend().snapshot()
    unlisted = await aunlisted_rooms(occupied)
    return {
        slug: {"count": len(people), "participants": [public_peer(p) for p in people]}
        for slug, people in occupied.items()
        if slug not in unlisted
    }


async def announce_left(presences: list[Presence]) -> None:
    """Announce presences removed by expiry (the sweeper's callback)."""
    for presence in presences:
        logger.info(
            "presence expired: %s in %s (process %s)",
            presence.peer_id,
            presence.room,
            presence.process,
        )
        await _announce(presence, "leave", reason="timeout")


async def _announce(
    presence: Presence, event: str, reason: str | None = None, count: int | None = None
) -> None:
    layer = get_channel_layer()
    if count is None:
        count = len(await get_backend().list_room(presence.room))
    member_event: dict[str, Any] = {
        "type": "presence.joined" if event == "join" else "presence.left",
        "presence": presence.as_dict(),
        "peer": public_peer(presence),
    }
    if reason:
        member_event["reason"] = reason
    await layer.group_send(room_group(presence.room), member_event)
    delta = {
        "type": "presence",
        "room": presence.room,
        "event": event,
        "peer": public_peer(presence),
        "count": count,
    }
    _lobby_batcher().add(json.dumps(delta, separators=(",", ":")))


class LobbyBatcher:
    """Coalesce lobby deltas once they come fast: then one ``group_send`` per ``interval``.

    Every join and leave goes to every lobby socket, so a burst of joins costs (joins x
    lobby sockets) deliveries. The first ``burst`` sends of an interval go out at once (and
    deltas queued during a send go out together right after it), so a normal site adds no
    delay; later ones wait for the interval's end and go out together. Deltas are encoded to
    JSON once here, not once per lobby socket; each still reaches clients as its own
    ``presence`` frame, in order (``rtcsite.batching``: one send in flight, in order).
    """

    def __init__(self, interval: float, burst: int = 2) -> None:
        self.loop = asyncio.get_running_loop()
        self.frames: Batcher[str, None] = Batcher(self._send, interval=interval, burst=burst)

    def add(self, frame: str) -> None:
        self.frames.submit(frame)

    async def _send(self, frames: list[str]) -> None:
        try:
            await get_channel_layer().group_send(
                LOBBY_GROUP, {"type": "lobby.frames", "frames": frames}
            )
        except Exception:
            logger.exception("lobby deltas lost (%d)", len(frames))


_batcher: LobbyBatcher | None = None


def _lobby_batcher() -> LobbyBatcher:
    """This process's batcher, on the running loop (tests run several loops)."""
    global _batcher
    if _batcher is None or _batcher.loop is not asyncio.get_running_loop():
        _batcher = LobbyBatcher(settings.LOBBY_DELTA_INTERVAL)
    return _batcher


_sweeper: asyncio.Task | None = None


def ensure_sweeper() -> None:
    """Start this process's expiry sweeper once, on the running loop (Daphne has no
    start-up hook for it). Every process sweeps; the backend's atomic ``expire`` hands
    each ghost to exactly one of them."""
    global _sweeper
    loop = asyncio.get_running_loop()
    if _sweeper is not None and not _sweeper.done() and _sweeper.get_loop() is loop:
        return
    _sweeper = loop.create_task(
        sweep_forever(get_backend(), announce_left, settings.PRESENCE_SWEEP_INTERVAL)
    )


def stop_sweeper() -> None:
    """Cancel this process's sweeper (tests: before their event loop closes)."""
    global _sweeper
    if _sweeper is not None and not _sweeper.done():
        loop = _sweeper.get_loop()
        if not loop.is_closed():
            _sweeper.cancel()
    _sweeper = None
