"""Room sockets: the part every kind of room shares, and the mesh room's own socket.

Two products, two paths, two consumers (the deployment's seam, docs/deploy.md):

* ``/ws/rooms/<slug>/``: ``MeshRoomConsumer``, browsers signaling each other (this module).
* ``/ws/media/<slug>/``: ``signaling.media.consumers.MediaRoomConsumer``, each browser with a
  server peer (aiortc) in echo and relay rooms; a proxy sends this path to media processes.

Each path refuses rooms of the other kind (``wrong-path``, close 4013), so an aiortc peer is
never built in a web process. ``RoomConsumer`` is what both share: the room lookup, the place
in the room (``presence.membership``: join with capacity, heartbeat, leave), ``welcome``, the
participants' ``media`` flags and the presence events (``peer-joined``/``peer-left``).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from django.conf import settings

from presence import membership
from presence import services as presence
from presence.backends.base import Presence
from presence.membership import Membership
from presence.services import public_peer
from rooms.models import Room
from rooms.services import aget_room, anote_activity
from rtcsite import logctx, metrics
from rtcsite.errors import ClientError, Forbidden, NotFound
from rtcsite.ice import client_ice_servers
from rtcsite.ws.codes import CloseCode
from rtcsite.ws.consumer import JsonSocketConsumer
from rtcsite.ws.service import service
from signaling import local
from signaling.messages import clean_candidate, clean_description, clean_peer_id

logger = logging.getLogger(__name__)

MEDIA_KEYS = ("audio", "video")
#: which path serves which room kinds (the other path's kinds are refused with wrong-path)
WS_PATHS = {"mesh": "/ws/rooms/{slug}/", "echo": "/ws/media/{slug}/", "relay": "/ws/media/{slug}/"}


class RoomConsumer(JsonSocketConsumer):
    """One participant's connection to one room; subclasses add the product's messages."""

    #: the room kinds this path serves
    kinds: ClassVar[tuple[str, ...]] = ()
    #: SDP and trickled ICE come in bursts (an offer and a dozen candidates per peer)
    rate_limit = (40.0, 120)
    #: the only query (the room) runs in rooms.services' reader thread
    close_db_per_message = False

    room: Room
    place: Membership | None = None
    #: peer id -> channel name of the others in the room, kept from presence events
    peers: dict[str, str]

    @property
    def peer_id(self) -> str:
        return self.place.peer_id if self.place else "-"

    @property
    def joined(self) -> bool:
        return self.place is not None and self.place.joined

    async def on_connect(self) -> None:
        try:
            self.room = await self._open_room()
            self.place, members = await membership.join(
                self.channel_layer,
                self.channel_name,
                self.room.slug,
                self.identity,
                capacity=self.room.capacity,
                title=self.room.title,
                resume=self._query_param("resume"),
            )
        except ClientError as exc:
            await self.refuse(exc, _close_code(exc))
            return
        logctx.bind(peer=self.place.peer_id)
        await anote_activity(self.room)  # keeps the room in the lobby (throttled write)
        others = [p for p in members if p.peer_id != self.place.peer_id]
        self.peers = {p.peer_id: p.channel for p in others}
        try:
            await self.on_join(members)
        except ClientError as exc:
            await self._leave()
            await self.refuse(exc, _close_code(exc))
            return
        await self.send_json(
            self.place.welcome(
                room={
                    "slug": self.room.slug,
                    "title": self.room.title,
                    "kind": self.room.kind,
                    "capacity": self.room.capacity,
                },
                peers=[public_peer(p) for p in others],
                ice_servers=client_ice_servers(settings.ICE_SERVERS, self.identity.id),
                ice_transport_policy=settings.ICE_TRANSPORT_POLICY,
                **self.welcome_fields(),
            )
        )

    async def _open_room(self) -> Room:
        slug = self.scope["url_route"]["kwargs"]["slug"]
        room = await aget_room(slug)
        if room is None:
            raise NotFound("No such room.")
        if not room.is_open:
            raise Forbidden("This room is closed.", code="room-closed")
        if room.kind not in self.kinds:
            raise ClientError(
                f"“{room.title}” is a {room.kind} room: its socket is "
                f"{WS_PATHS[room.kind].format(slug=room.slug)}.",
                code="wrong-path",
            )
        return room

    async def on_join(self, members: list[Presence]) -> None:
        """Hook: the place is taken (``members``: the room as of the join, this one
        included), ``welcome`` not sent yet. A ``ClientError`` here gives the place back and
        refuses the socket."""

    def welcome_fields(self) -> dict[str, Any]:
        """Hook: the product's own ``welcome`` fields."""
        return {}

    async def __call__(self, scope, receive, send) -> None:
        """Give the place back even if a handler crashes (no ``disconnect`` runs then)."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._leave()

    async def disconnect(self, code: int) -> None:
        await self._leave()

    async def _leave(self) -> None:
        """Give up the place and announce ``peer-left`` (once, however we got here)."""
        await membership.leave(self.place)

    def log_context(self) -> str:
        room = getattr(self, "room", None)
        return f"{super().log_context()} room={room.slug if room else '-'} peer={self.peer_id}"

    def require_joined(self) -> Membership:
        if not self.joined:
            raise ClientError("Join the room before signaling.", code="not-joined")
        return self.place

    async def resync_client(self) -> None:
        """The room service is back: ``{"type": "peers", "peers": [...]}``, everyone in the
        room now but us (the client drops who is gone and links to who is new); peers
        re-tracked after this arrive as ``peer-joined``."""
        if not self.joined:
            return
        members = await presence.members(self.room.slug)
        others = [p for p in members if p.peer_id != self.peer_id]
        self.peers = {p.peer_id: p.channel for p in others}
        await self.send_json({"type": "peers", "peers": [public_peer(p) for p in others]})

    # --- client messages ------------------------------------------------------------------

    async def handle_ping(self, content: dict[str, Any]) -> None:
        """Pings double as presence heartbeats."""
        try:
            await membership.heartbeat(self.place)
        except ClientError as exc:  # our place expired and the room filled up
            await self.refuse(exc, CloseCode.ROOM_FULL)
            return
        await super().handle_ping(content)

    async def handle_leave(self, content: dict[str, Any]) -> None:
        await self._leave()
        await self.close(code=1000)

    async def handle_media(self, content: dict[str, Any]) -> None:
        """``{"type": "media", "audio": bool, "video": bool}``: shown on others' tiles."""
        media = {k: content[k] for k in MEDIA_KEYS if k in content}
        if not media or not all(isinstance(v, bool) for v in media.values()):
            raise ClientError("media needs boolean 'audio' and/or 'video'.")
        place = self.require_joined()
        await membership.set_media(place, media)

    # --- group events ---------------------------------------------------------------------

    async def presence_joined(self, event: dict[str, Any]) -> None:
        peer_id, channel = event["presence"]["peer_id"], event["presence"]["channel"]
        if peer_id == self.peer_id or not self.joined:
            return
        if self.peers.get(peer_id) == channel:
            return  # already in our welcome list (it joined while we did)
        self.peers[peer_id] = channel
        await self.send_json({"type": "peer-joined", **event["peer"]})

    async def presence_left(self, event: dict[str, Any]) -> None:
        peer_id = event["presence"]["peer_id"]
        if peer_id == self.peer_id or not self.joined:
            return
        self.peers.pop(peer_id, None)
        message = {"type": "peer-left", "peer": peer_id}
        if event.get("reason"):
            message["reason"] = event["reason"]
        await self.send_json(message)

    async def presence_media(self, event: dict[str, Any]) -> None:
        peer = event["peer"]
        if peer["peer"] != self.peer_id:
            await self.send_json(
                {"type": "peer-media", "peer": peer["peer"], "media": peer["media"]}
            )


def _close_code(error: ClientError) -> CloseCode:
    """The close code a refused join ends with (docs/protocol.md, "Close codes")."""
    return {
        "not-found": CloseCode.NOT_FOUND,
        "room-full": CloseCode.ROOM_FULL,
        "wrong-path": CloseCode.WRONG_PATH,
        "media-elsewhere": CloseCode.WRONG_PROCESS,
        "service-unavailable": CloseCode.SERVICE_UNAVAILABLE,
    }.get(error.code, CloseCode.FORBIDDEN)


class MeshRoomConsumer(RoomConsumer):
    """``/ws/rooms/<slug>/``: addressed SDP/ICE relay between the browsers of a mesh room."""

    kinds = ("mesh",)

    async def on_join(self, members: list[Presence]) -> None:
        local.register(self.channel_name, self)

    async def _leave(self) -> None:
        local.unregister(self.channel_name)
        await super()._leave()

    async def handle_offer(self, content: dict[str, Any]) -> None:
        await self._relay(content, clean_description(content, "offer"))

    async def handle_answer(self, content: dict[str, Any]) -> None:
        await self._relay(content, clean_description(content, "answer"))

    async def handle_candidate(self, content: dict[str, Any]) -> None:
        await self._relay(content, clean_candidate(content))

    async def _relay(self, content: dict[str, Any], message: dict[str, Any]) -> None:
        """Deliver to the addressed peer only, with ``from`` stamped by the server."""
        self.require_joined()
        target = clean_peer_id(content.get("to"))
        channel = self.peers.get(target)
        if channel is None:
            logger.info("%s: %s to unknown peer %s", self.log_context(), message["type"], target)
            raise ClientError(
                "No such peer in this room (it may have left).", code="unknown-peer", peer=target
            )
        message["from"] = self.peer_id
        local_target = local.lookup(channel) if settings.SIGNALING_LOCAL_DELIVERY else None
        metrics.RELAYED.labels(message["type"], "layer" if local_target is None else "local").inc()
        if local_target is not None:
            await local_target.deliver_local(message)  # works while Redis is away too
        else:
            service().require_up()
            await self.channel_layer.send(channel, {"type": "signal.relay", "message": message})

    async def signal_relay(self, event: dict[str, Any]) -> None:
        """An offer/answer/candidate addressed to this connection by another peer."""
        if self.joined:
            await self.send_json(event["message"])

    async def deliver_local(self, message: dict[str, Any]) -> None:
        """The same, from a peer on this process (``signaling.local``), in its task: a
        failure here (our socket is closing) must not break the sender's connection."""
        try:
            await self.signal_relay({"type": "signal.relay", "message": message})
        except Exception:
            logger.info("local delivery to %s failed", self.log_context(), exc_info=True)
