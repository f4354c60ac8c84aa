"""Room membership: one socket's place in one room, from join to leave.

Every socket that is "in" something uses this: mesh room sockets, server (echo/relay) room
sockets and stream viewer sockets. The sequence is the same for all of them and is written
only here:

* **join**: a reconnecting client's ``resume`` place is released first (its own ghost would
  otherwise count against a full room); the socket is added to the room's channel-layer group
  *before* it is tracked, so whoever tracks after it is either in its member list or
  announced to it; tracking checks capacity atomically (``presence.services.join``)
  and announces the join. A full room leaves nothing behind and raises ``room-full``.
* **heartbeat**: pushes the place's expiry forward; a place that expired meanwhile (the
  server was too busy to refresh it) is taken back, or ``room-full`` if someone took it.
* **leave**: idempotent; gives the place back and announces the leave, however the socket
  went (leave message, disconnect, a crashed handler).

While the room service (Redis) is away (``rtcsite.ws.service``) a join is refused with
``service-unavailable``, heartbeats are skipped and a leave is made on recovery; the
process holds every live place so that recovery can ``retrack`` it under the same peer id.

The caller sends what it learns (``Membership.welcome``, the peers already there) and
forwards presence events; this module never talks to the client.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from identity.services import Identity
from presence import services as presence
from presence.backends.base import Presence, RoomFull
from rtcsite import metrics
from rtcsite.errors import Conflict
from rtcsite.ws.service import SERVICE_ERRORS, ServiceUnavailable, service

PEER_ID_BYTES = 6
#: A peer id as clients send it back (``to``, ``resume``): match with ``fullmatch``.
PEER_ID_RE = re.compile(r"[0-9a-f]{12}")


def new_peer_id() -> str:
    """A fresh, unguessable id for one socket's place (two tabs are two peers)."""
    return secrets.token_hex(PEER_ID_BYTES)


@dataclass(slots=True)
class Membership:
    """What ``join`` granted: the place (held by the socket for its lifetime, so small:
    the member list of the join is returned beside it, not kept)."""

    layer: Any  # the channel layer the socket's group lives in
    room: str  # presence room key: a room slug, or ``stream.<slug>`` for viewers
    peer_id: str
    channel: str  # this socket's channel-layer name
    user: Identity
    capacity: int | None
    joined: bool = True

    @property
    def group(self) -> str:
        return presence.room_group(self.room)

    def welcome(self, **fields: Any) -> dict[str, Any]:
        """The ``welcome`` message every room-like socket starts with (docs/protocol.md):
        who you are here and how often to heartbeat, plus the product's own ``fields``."""
        return {
            "type": "welcome",
            "you": {"peer": self.peer_id, **self.user.as_dict()},
            **fields,
            "heartbeat_interval": settings.PRESENCE_HEARTBEAT_INTERVAL,
        }


async def join(
    layer: Any,
    channel: str,
    room: str,
    user: Identity,
    *,
    capacity: int | None,
    title: str = "",
    resume: str | None = None,
) -> tuple[Membership, list[Presence]]:
    """Take a place in ``room`` for the socket ``channel`` (see the module docstring);
    returns it and the room's members as of the join, this one included.

    ``resume``: the peer id this client held before reconnecting; released if it belongs to
    the same user. Raises ``Conflict`` (``room-full``) when there is no place.
    """
    svc = service()
    svc.require_up()
    peer_id = new_peer_id()
    group = presence.room_group(room)
    try:
        if resume:
            await _release(room, resume, user)
        await svc.group_add(layer, group, channel)
        try:
            _, members = await presence.join(
                room, peer_id, channel=channel, user_id=user.id, name=user.name, capacity=capacity
            )
        except RoomFull:
            await svc.group_discard(layer, group, channel)
            raise Conflict(
                f"“{title or room}” is full ({capacity} participants).", code="room-full"
            ) from None
    except SERVICE_ERRORS as exc:
        svc.failed(exc, "join")
        svc.leave_later(room, peer_id)  # it may have been tracked before the error
        await svc.group_discard(layer, group, channel)
        raise ServiceUnavailable() from None
    metrics.JOINS.labels("audience" if presence.is_audience(room) else "room").inc()
    place = Membership(layer, room, peer_id, channel, user, capacity)
    svc.hold(place)
    return place, members


async def heartbeat(membership: Membership | None) -> None:
    """Refresh the place; take it back if it expired. ``room-full`` if it was taken.
    Skipped while the room service is away (recovery re-tracks every place)."""
    if membership is None or not membership.joined:
        return
    svc = service()
    if not svc.up:
        return
    try:
        if await presence.heartbeat(membership.room, membership.peer_id):
            return
        error = await retrack(membership)
    except SERVICE_ERRORS as exc:
        svc.failed(exc, "heartbeat")
        return
    if error is not None:
        raise error


async def retrack(membership: Membership) -> Conflict | None:
    """Track the place again under its peer id (a heartbeat found it expired, or the room
    service came back empty): announced as a join, capacity checked. Returns ``room-full``
    (the place is then left) if the room filled up meanwhile; Redis errors propagate."""
    if not membership.joined:
        return None
    try:
        await presence.join(
            membership.room,
            membership.peer_id,
            channel=membership.channel,
            user_id=membership.user.id,
            name=membership.user.name,
            capacity=membership.capacity,
        )
    except RoomFull:
        await leave(membership)
        return Conflict("Your place expired and the room filled up.", code="room-full")
    return None


async def leave(membership: Membership | None) -> None:
    """Give the place back and announce it, once (later calls do nothing). While the room
    service is away the leave is made on recovery."""
    if membership is None or not membership.joined:
        return
    membership.joined = False
    metrics.LEAVES.labels("audience" if presence.is_audience(membership.room) else "room").inc()
    svc = service()
    svc.release(membership)
    await svc.group_discard(membership.layer, membership.group, membership.channel)
    if not svc.up:
        svc.leave_later(membership.room, membership.peer_id)
        return
    try:
        await presence.leave(membership.room, membership.peer_id)
    except SERVICE_ERRORS as exc:
        svc.failed(exc, "leave")
        svc.leave_later(membership.room, membership.peer_id)


async def set_media(membership: Membership, media: dict[str, bool]) -> None:
    """Merge ``media`` flags (``{"audio": bool, "video": bool}``) into the place; the room
    hears ``peer-media``."""
    service().require_up()
    await presence.set_media(membership.room, membership.peer_id, media)


async def _release(room: str, old_peer_id: str, user: Identity) -> None:
    """Free a reconnecting client's previous place, only if the same user holds it."""
    if not PEER_ID_RE.fullmatch(old_peer_id):
        return
    for member in await presence.members(room):
        if member.peer_id == old_peer_id and member.user_id == user.id:
            await presence.leave(room, old_peer_id)
            return
