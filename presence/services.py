"""Presence services: join/leave/heartbeat a room and tell everyone who needs to know.

Consumers call these; the backend (memory or Redis) stores who is where, and the
channel layer carries the deltas: to the room's group (``peer-joined``/``peer-left`` for
the people in it) and to the ``lobby`` group (room cards update live). Leaves caused by
expiry (a crashed process, a vanished client) go through the same ``announce_left`` as
clean leaves, so clients cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from channels.layers import get_channel_layer

from presence.backends import get_backend
from presence.backends.base import Presence
from presence.sweeper import sweep_forever

logger = logging.getLogger(__name__)

LOBBY_GROUP = "lobby"
_PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}"


def process_id() -> str:
    """Which server process holds a socket (shown in admin; useful after a crash)."""
    return _PROCESS_ID


def room_group(slug: str) -> str:
    return f"room.{slug}"


def public_peer(presence: Presence) -> dict[str, Any]:
    """What other participants and the lobby may see of a presence (no channel names)."""
    return {
        "peer": presence.conn_id,
        "user": presence.peer_id,
        "name": presence.name,
        "joined_at": presence.joined_at,
        "media": presence.media,
    }


async def join(
    room: str,
    conn_id: str,
    *,
    channel: str,
    user_id: str,
    name: str,
    capacity: int | None,
    media: dict[str, bool] | None = None,
) -> Presence:
    """Track a connection in a room (capacity enforced atomically) and announce it.

    Raises ``RoomFull`` when the room has no place; nothing is announced then.
    """
    ensure_sweeper()
    presence = await get_backend().track(
        room,
        conn_id,
        peer_id=user_id,
        name=name,
        process=process_id(),
        channel=channel,
        media=media,
        capacity=capacity,
    )
    await _announce(presence, "join")
    return presence


async def leave(room: str, conn_id: str) -> Presence | None:
    """Untrack and announce; ``None`` (and no announcement) if it was already gone."""
    presence = await get_backend().untrack(room, conn_id)
    if presence is not None:
        await _announce(presence, "leave")
    return presence


async def heartbeat(room: str, conn_id: str) -> bool:
    """Refresh a presence; ``False`` if it had expired (the caller re-joins)."""
    return await get_backend().refresh(room, conn_id)


async def set_media(room: str, conn_id: str, media: dict[str, bool]) -> Presence | None:
    presence = await get_backend().update_media(room, conn_id, media)
    if presence is not None:
        await get_channel_layer().group_send(
            room_group(room), {"type": "presence.media", "presence": presence.as_dict()}
        )
    return presence


async def members(room: str) -> list[Presence]:
    return await get_backend().list_room(room)


async def lobby_snapshot() -> dict[str, dict[str, Any]]:
    """Every occupied room with its count and participants, for a new lobby client."""
    backend = get_backend()
    counts = await backend.room_counts()
    rooms: dict[str, dict[str, Any]] = {}
    for slug in counts:
        people = await backend.list_room(slug)
        if people:
            rooms[slug] = {"count": len(people), "participants": [public_peer(p) for p in people]}
    return rooms


async def announce_left(presences: list[Presence]) -> None:
    """Announce presences removed by expiry (the sweeper's callback)."""
    for presence in presences:
        logger.info(
            "presence expired: %s in %s (process %s)",
            presence.conn_id,
            presence.room,
            presence.process,
        )
        await _announce(presence, "leave", reason="timeout")


async def _announce(presence: Presence, event: str, reason: str | None = None) -> None:
    layer = get_channel_layer()
    count = len(await get_backend().list_room(presence.room))
    member_event: dict[str, Any] = {
        "type": "presence.joined" if event == "join" else "presence.left",
        "presence": presence.as_dict(),
    }
    if reason:
        member_event["reason"] = reason
    await layer.group_send(room_group(presence.room), member_event)
    await layer.group_send(
        LOBBY_GROUP,
        {
            "type": "lobby.delta",
            "room": presence.room,
            "event": event,
            "peer": public_peer(presence),
            "count": count,
        },
    )


_sweeper: asyncio.Task | None = None


def ensure_sweeper() -> None:
    """Start this process's expiry sweeper once, on the running loop (Daphne has no
    start-up hook for it). Every process sweeps; the backend's atomic ``expire`` hands
    each ghost to exactly one of them."""
    global _sweeper
    loop = asyncio.get_running_loop()
    if _sweeper is not None and not _sweeper.done() and _sweeper.get_loop() is loop:
        return
    from django.conf import settings

    interval = float(getattr(settings, "PRESENCE_SWEEP_INTERVAL", 2.0))
    _sweeper = loop.create_task(sweep_forever(get_backend(), announce_left, interval))


def stop_sweeper() -> None:
    """Cancel this process's sweeper (tests: before their event loop closes)."""
    global _sweeper
    if _sweeper is not None and not _sweeper.done():
        loop = _sweeper.get_loop()
        if not loop.is_closed():
            _sweeper.cancel()
    _sweeper = None
