"""Presence services: join/leave/heartbeat a room and tell everyone who needs to know.

Consumers call these; the backend (memory or Redis) stores who is where, and the
channel layer carries the deltas: to the room's group (``peer-joined``/``peer-left`` for
the people in it) and to the ``lobby`` group (room cards update live). Leaves caused by
expiry (a crashed process, a vanished client) go through the same ``announce_left`` as
clean leaves, so clients cannot tell the difference.

**Audiences** (rooms named ``stream.<slug>``: a live stream's viewers) have no capacity and
may be large, and their members are anonymous to each other and to the lobby: a join or
leave there is not a per-member event but a *count*, coalesced (``AudienceCounts``): one
read of the counts and one ``presence.count`` per changed audience per batch, however many
viewers came or went. Before, every viewer re-listed the whole audience on every join
(O(N²) for N joins).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from presence.backends import get_backend
from presence.backends.base import PeerInfo, Presence
from presence.sweeper import sweep_forever
from rtcsite import metrics
from rtcsite.batching import Batcher
from rtcsite.process import PROCESS_ID
from rtcsite.ws.service import SERVICE_ERRORS, service

logger = logging.getLogger(__name__)

LOBBY_GROUP = "lobby"
#: rooms with this prefix are audiences (see the module docstring); room slugs have no dots
AUDIENCE_PREFIX = "stream."


def is_audience(room: str) -> bool:
    return room.startswith(AUDIENCE_PREFIX)


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
    metrics.PRESENCE_OPS.labels("join").inc()
    peer = PeerInfo(user_id=user_id, name=name, process=PROCESS_ID, channel=channel, media=media)
    presence, members, at = await get_backend().track_and_list(
        room, peer_id, peer, capacity=capacity
    )
    await _announce(presence, "join", count=len(members), at=at)
    return presence, members


async def leave(room: str, peer_id: str) -> Presence | None:
    """Untrack and announce; ``None`` (and no announcement) if it was already gone."""
    metrics.PRESENCE_OPS.labels("leave").inc()
    presence, count, at = await get_backend().untrack_and_count(room, peer_id)
    if presence is not None:
        await _announce(presence, "leave", count=count, at=at)
    return presence


async def heartbeat(room: str, peer_id: str) -> bool:
    """Refresh a presence; ``False`` if it had expired (the caller re-joins)."""
    metrics.PRESENCE_OPS.labels("heartbeat").inc()
    return await get_backend().refresh(room, peer_id)


async def set_media(room: str, peer_id: str, media: dict[str, bool]) -> Presence | None:
    metrics.PRESENCE_OPS.labels("media").inc()
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


def lobby_peer(presence: Presence) -> dict[str, Any]:
    """What the lobby sees of a room's participant: a card's name (no identity id)."""
    return {"peer": presence.peer_id, "name": presence.name}


async def lobby_snapshot() -> dict[str, Any]:
    """A new (or resyncing) lobby client's ``lobby-state`` fields: ``rooms``, every occupied
    room the lobby lists with its count and the first ``LOBBY_NAMES_PER_CARD`` participants
    (audiences: the count only), so its size grows with the number of rooms, not of people;
    and ``at``, the snapshot's time (deltas not newer are in it). Idle visitor rooms are not
    listed (``rooms.services.list_rooms``)."""
    from rooms.services import aunlisted_rooms

    occupied, at = await get_backend().snapshot()
    unlisted = await aunlisted_rooms(occupied)
    names = settings.LOBBY_NAMES_PER_CARD
    rooms: dict[str, dict[str, Any]] = {}
    for slug, people in occupied.items():
        if slug in unlisted:
            continue
        rooms[slug] = {"count": len(people)}
        if not is_audience(slug):
            rooms[slug]["participants"] = [lobby_peer(p) for p in people[:names]]
    return {"rooms": rooms, "at": at}


def announce_new_room(slug: str, kind: str) -> None:
    """A room was created (sync: the join view's service). Lobbies fetch their room lists
    on this event only: a presence delta for a room without a card is not a reason to
    (beyond the lobby's 200 cards per kind it made every lobby re-fetch the page)."""
    try:
        async_to_sync(get_channel_layer().group_send)(
            LOBBY_GROUP, {"type": "lobby.room", "slug": slug, "kind": kind}
        )
    except SERVICE_ERRORS as exc:  # Redis away: lobbies resync when it is back
        logger.warning("could not announce the new room %s: %s", slug, exc)
    except Exception:  # a layer hiccup must not fail the creation; the room is listed anyway
        logger.exception("could not announce the new room %s", slug)


async def announce_left(presences: list[Presence]) -> None:
    """Announce presences removed by expiry (the sweeper's callback): with their rooms'
    counts left, read once after the removal."""
    if not presences:
        return
    rooms = [p.room for p in presences if not is_audience(p.room)]
    counts, at = await get_backend().count_rooms(list(dict.fromkeys(rooms)))
    for presence in presences:
        logger.info(
            "presence expired: %s in %s (process %s)",
            presence.peer_id,
            presence.room,
            presence.process,
        )
        await _announce(
            presence, "leave", reason="timeout", count=counts.get(presence.room, 0), at=at
        )


async def _announce(
    presence: Presence, event: str, *, count: int, at: int, reason: str | None = None
) -> None:
    """Tell the room and the lobby; ``count`` is the room's as of the backend time ``at``."""
    if is_audience(presence.room):
        _audience_counts().changed(presence.room)
        return
    layer = get_channel_layer()
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
        "peer": lobby_peer(presence),
        "count": count,
        "at": at,
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
        metrics.lobby_fanout(len(frames))
        try:
            await get_channel_layer().group_send(
                LOBBY_GROUP, {"type": "lobby.frames", "frames": frames}
            )
        except SERVICE_ERRORS as exc:  # lobbies get a fresh snapshot on recovery
            service().failed(exc, "lobby deltas")
        except Exception:
            logger.exception("lobby deltas lost (%d)", len(frames))


_batcher: LobbyBatcher | None = None


def _lobby_batcher() -> LobbyBatcher:
    """This process's batcher, on the running loop (tests run several loops)."""
    global _batcher
    if _batcher is None or _batcher.loop is not asyncio.get_running_loop():
        _batcher = LobbyBatcher(settings.LOBBY_DELTA_INTERVAL)
    return _batcher


class AudienceCounts:
    """Audience joins and leaves as coalesced counts (see the module docstring).

    A batch reads the changed audiences' counts at once (the backend's ``count_rooms``: one
    round trip) and sends each one ``presence.count`` event (its viewers) and one ``count``
    delta (the lobby). Both carry the read's backend time ``at``: a viewer (and a lobby
    page) keeps the newest, so counts read by two processes cannot leave it on the older
    one. Paced
    like the lobby (``rtcsite.batching``): a lone join goes out at once, a burst in batches
    of at most ``burst`` per ``interval``.
    """

    def __init__(self, interval: float, burst: int = 2) -> None:
        self.loop = asyncio.get_running_loop()
        self.rooms: Batcher[str, None] = Batcher(self._send, interval=interval, burst=burst)

    def changed(self, room: str) -> None:
        self.rooms.submit(room)

    async def _send(self, rooms: list[str]) -> None:
        try:
            counts, at = await get_backend().count_rooms(list(dict.fromkeys(rooms)))
            layer = get_channel_layer()
            for room, count in counts.items():  # each once, in order
                await layer.group_send(
                    room_group(room), {"type": "presence.count", "count": count, "at": at}
                )
                delta = {
                    "type": "presence",
                    "room": room,
                    "event": "count",
                    "count": count,
                    "at": at,
                }
                _lobby_batcher().add(json.dumps(delta, separators=(",", ":")))
        except SERVICE_ERRORS as exc:  # re-tracked viewers are counted again on recovery
            service().failed(exc, "audience counts")
        except Exception:
            logger.exception("audience counts lost (%d rooms)", len(rooms))


_counts: AudienceCounts | None = None


def _audience_counts() -> AudienceCounts:
    """This process's audience counter, on the running loop (tests run several loops)."""
    global _counts
    if _counts is None or _counts.loop is not asyncio.get_running_loop():
        _counts = AudienceCounts(settings.LOBBY_DELTA_INTERVAL)
    return _counts


_sweeper: asyncio.Task | None = None


def ensure_sweeper() -> None:
    """Start this process's expiry sweeper once, on the running loop (Daphne has no
    start-up hook for it). Every process sweeps; the backend's atomic ``expire`` hands
    each ghost to exactly one of them. The sweeper also renews this process's lease, so
    the others' sweepers expire its presences within seconds if it dies."""
    global _sweeper
    loop = asyncio.get_running_loop()
    if _sweeper is not None and not _sweeper.done() and _sweeper.get_loop() is loop:
        return
    _sweeper = loop.create_task(
        sweep_forever(
            get_backend(),
            announce_left,
            settings.PRESENCE_SWEEP_INTERVAL,
            process=PROCESS_ID,
            on_unavailable=lambda exc: service().failed(exc, "presence sweep"),
            on_lease_lost=lambda: service().failed("presence lease lost", "presence sweep"),
        )
    )


def stop_sweeper() -> None:
    """Cancel this process's sweeper (tests: before their event loop closes)."""
    global _sweeper
    if _sweeper is not None and not _sweeper.done():
        loop = _sweeper.get_loop()
        if not loop.is_closed():
            _sweeper.cancel()
    _sweeper = None
