"""The room WebSocket (``/ws/rooms/<slug>/``): join, presence, heartbeats.

Every kind of room uses it: joining tracks this connection's presence (capacity
enforced atomically by the presence backend), the server assigns the peer id, sends
``welcome`` with the people already there, and tells them ``peer-joined``. Leaving,
disconnecting or missing heartbeats produces ``peer-left``. The media features add their
own messages: SDP/ICE relay between browsers in mesh rooms; in echo and relay rooms the
same ``offer``/``candidate`` messages go to this connection's server peer
(``signaling.media.rooms.MediaSession``), which answers.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from django.conf import settings

from presence import services as presence
from presence.backends.base import RoomFull
from rooms.models import Room
from rooms.services import aget_room
from rtcsite.errors import ClientError, Conflict, Forbidden, NotFound
from rtcsite.ice import client_ice_servers
from rtcsite.process import PROCESS_ID
from rtcsite.ws.codes import CloseCode
from rtcsite.ws.consumer import JsonSocketConsumer
from signaling import local
from signaling.media.rooms import SERVER_KINDS, MediaSession, joined_elsewhere
from signaling.messages import PEER_ID_RE, clean_candidate, clean_description, clean_peer_id

logger = logging.getLogger(__name__)

MEDIA_KEYS = ("audio", "video")


class RoomConsumer(JsonSocketConsumer):
    """One participant's connection to one room."""

    #: SDP and trickled ICE come in bursts (an offer and a dozen candidates per peer)
    rate_limit = (40.0, 120)
    #: the only query (the room) runs in rooms.services' reader thread
    close_db_per_message = False

    room: Room
    peer_id: str
    joined: bool = False
    #: peer id -> channel name of the others in the room, kept from presence events
    peers: dict[str, str]
    #: the server peer's session in echo/relay rooms
    media: MediaSession | None = None

    async def on_connect(self) -> None:
        slug = self.scope["url_route"]["kwargs"]["slug"]
        room = await aget_room(slug)
        if room is None:
            await self.refuse(NotFound("No such room."), CloseCode.NOT_FOUND)
            return
        if not room.is_open:
            await self.refuse(
                Forbidden("This room is closed.", code="room-closed"), CloseCode.FORBIDDEN
            )
            return
        self.room = room
        self.peer_id = secrets.token_hex(6)  # per connection: two tabs are two peers
        await self._release_resumed_place()
        # In the room's group *before* tracking: whoever tracks after us is then either in
        # our member list or announced to us (events wait until this handler returns).
        group = presence.room_group(room.slug)
        await self.channel_layer.group_add(group, self.channel_name)
        try:
            _, members = await presence.join_and_list(
                room.slug,
                self.peer_id,
                channel=self.channel_name,
                user_id=self.identity.id,
                name=self.identity.name,
                capacity=room.capacity,
            )
        except RoomFull:
            await self.channel_layer.group_discard(group, self.channel_name)
            await self.refuse(
                Conflict(
                    f"“{room.title}” is full ({room.capacity} participants).", code="room-full"
                ),
                CloseCode.ROOM_FULL,
            )
            return
        self.joined = True
        local.register(self.channel_name, self)
        if joined_elsewhere(room.kind, self.peer_id, members, PROCESS_ID):
            await self._leave()
            await self.refuse(
                Conflict(
                    "The other participant of this relay room is connected to another server "
                    "process; try again (the load balancer should route a room to one process).",
                    code="media-elsewhere",
                ),
                CloseCode.WRONG_PROCESS,
            )
            return
        others = [p for p in members if p.peer_id != self.peer_id]
        self.peers = {p.peer_id: p.channel for p in others}
        await self.send_json(
            {
                "type": "welcome",
                "you": {"peer": self.peer_id, **self.identity.as_dict()},
                "room": {
                    "slug": room.slug,
                    "title": room.title,
                    "kind": room.kind,
                    "capacity": room.capacity,
                },
                "peers": [presence.public_peer(p) for p in others],
                "ice_servers": client_ice_servers(settings.ICE_SERVERS, self.identity.id),
                "ice_transport_policy": settings.ICE_TRANSPORT_POLICY,
                "heartbeat_interval": settings.PRESENCE_HEARTBEAT_INTERVAL,
                "recording_available": room.kind in SERVER_KINDS
                and settings.SERVER_ROOM_RECORDINGS,
            }
        )
        if room.kind in SERVER_KINDS:
            self.media = MediaSession(room.kind, room.slug, self.peer_id, self.send_json)

    async def __call__(self, scope, receive, send) -> None:
        """Give the place back even if a handler crashes (no ``disconnect`` runs then)."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._leave()

    async def disconnect(self, code: int) -> None:
        await self._leave()

    async def _release_resumed_place(self) -> None:
        """``?resume=<old peer id>``: a reconnecting client frees its own previous place.

        A dropped connection holds its place until its presence expires; without this a
        quick reconnect into a full room would be refused by its own ghost. Only a place
        held by the same identity can be released this way.
        """
        old = self._query_param("resume")
        if not old or not PEER_ID_RE.match(old):
            return
        for member in await presence.members(self.room.slug):
            if member.peer_id == old and member.user_id == self.identity.id:
                await presence.leave(self.room.slug, old)
                return

    def log_context(self) -> str:
        room = getattr(self, "room", None)
        return (
            f"room={room.slug if room else '-'} peer={getattr(self, 'peer_id', '-')} "
            f"user={self.identity.id if hasattr(self, 'identity') else '-'}"
        )

    async def _leave(self) -> None:
        """Give up the place and announce ``peer-left`` (once, however we got here)."""
        media, self.media = self.media, None
        if media is not None:
            await media.close()
        if self.joined:
            self.joined = False
            local.unregister(self.channel_name)
            await self.channel_layer.group_discard(
                presence.room_group(self.room.slug), self.channel_name
            )
            await presence.leave(self.room.slug, self.peer_id)

    # --- client messages ------------------------------------------------------------------

    async def handle_ping(self, content: dict[str, Any]) -> None:
        """Pings double as presence heartbeats."""
        if self.joined and not await presence.heartbeat(self.room.slug, self.peer_id):
            await self._rejoin()
        await super().handle_ping(content)

    async def handle_leave(self, content: dict[str, Any]) -> None:
        await self._leave()
        await self.close(code=1000)

    async def handle_media(self, content: dict[str, Any]) -> None:
        """``{"type": "media", "audio": bool, "video": bool}``: shown on others' tiles."""
        media = {k: content[k] for k in MEDIA_KEYS if k in content}
        if not media or not all(isinstance(v, bool) for v in media.values()):
            raise ClientError("media needs boolean 'audio' and/or 'video'.")
        await presence.set_media(self.room.slug, self.peer_id, media)

    async def handle_offer(self, content: dict[str, Any]) -> None:
        offer = clean_description(content, "offer")
        if self._server_room():
            await self._media_call(self._media().offer(offer["sdp"]))
        else:
            await self._relay(content, offer)

    async def handle_answer(self, content: dict[str, Any]) -> None:
        if self._server_room():
            raise ClientError("In server rooms the browser offers and the server answers.")
        await self._relay(content, clean_description(content, "answer"))

    async def handle_candidate(self, content: dict[str, Any]) -> None:
        candidate = clean_candidate(content)
        if self._server_room():
            await self._media_call(self._media().candidate(candidate["candidate"]))
        else:
            await self._relay(content, candidate)

    async def handle_echo_options(self, content: dict[str, Any]) -> None:
        """``{"type": "echo-options", "faces": bool}``: boxes drawn into the echo."""
        faces = content.get("faces")
        if not isinstance(faces, bool):
            raise ClientError("echo-options needs a boolean 'faces'.")
        if not self._server_room() or self.room.kind != "echo":
            raise ClientError("echo-options is for echo rooms only.")
        self._media().set_faces(faces)

    async def handle_record(self, content: dict[str, Any]) -> None:
        """``{"type": "record", "on": bool}``: server-side recording of what we send."""
        on = content.get("on")
        if not isinstance(on, bool):
            raise ClientError("record needs a boolean 'on'.")
        if not self._server_room():
            raise ClientError("record is for echo and relay rooms only.")
        await self._media_call(
            self._media().set_recording(on, self.identity.id, self.identity.name)
        )

    def _server_room(self) -> bool:
        return hasattr(self, "room") and self.room.kind in SERVER_KINDS

    def _media(self) -> MediaSession:
        if not self.joined or self.media is None:
            raise ClientError("Join the room before signaling.", code="not-joined")
        return self.media

    async def _media_call(self, call) -> None:
        """Run a media-session call; its refusals become ``error`` messages."""
        await call

    async def _relay(self, content: dict[str, Any], message: dict[str, Any]) -> None:
        """Deliver to the addressed peer only, with ``from`` stamped by the server."""
        if not self.joined:
            raise ClientError("Join the room before signaling.", code="not-joined")
        target = clean_peer_id(content.get("to"))
        channel = self.peers.get(target)
        if channel is None:
            logger.info(
                "room %s peer %s: %s to unknown peer %s",
                self.room.slug,
                self.peer_id,
                message["type"],
                target,
            )
            raise ClientError(
                "No such peer in this room (it may have left).", code="unknown-peer", peer=target
            )
        message["from"] = self.peer_id
        target = local.lookup(channel) if settings.SIGNALING_LOCAL_DELIVERY else None
        if target is not None:
            await target.deliver_local(message)
        else:
            await self.channel_layer.send(channel, {"type": "signal.relay", "message": message})

    async def _rejoin(self) -> None:
        """Our presence expired (e.g. the server was too busy to refresh): take it back."""
        try:
            await presence.join(
                self.room.slug,
                self.peer_id,
                channel=self.channel_name,
                user_id=self.identity.id,
                name=self.identity.name,
                capacity=self.room.capacity,
            )
        except RoomFull:
            self.joined = False
            await self.refuse(
                Conflict("Your place expired and the room filled up.", code="room-full"),
                CloseCode.ROOM_FULL,
            )

    # --- group events ---------------------------------------------------------------------

    async def presence_joined(self, event: dict[str, Any]) -> None:
        joined = event["presence"]
        if joined["peer_id"] == self.peer_id or not self.joined:
            return
        if self.peers.get(joined["peer_id"]) == joined["channel"]:
            return  # already in our welcome list (it joined while we did)
        self.peers[joined["peer_id"]] = joined["channel"]
        await self.send_json({"type": "peer-joined", **_public(joined)})

    async def presence_left(self, event: dict[str, Any]) -> None:
        if event["presence"]["peer_id"] == self.peer_id or not self.joined:
            return
        self.peers.pop(event["presence"]["peer_id"], None)
        message = {"type": "peer-left", "peer": event["presence"]["peer_id"]}
        if event.get("reason"):
            message["reason"] = event["reason"]
        await self.send_json(message)

    async def presence_media(self, event: dict[str, Any]) -> None:
        if event["presence"]["peer_id"] != self.peer_id:
            await self.send_json(
                {
                    "type": "peer-media",
                    "peer": event["presence"]["peer_id"],
                    "media": event["presence"]["media"],
                }
            )

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


def _public(presence: dict[str, Any]) -> dict[str, Any]:
    return {
        "peer": presence["peer_id"],
        "user": presence["user_id"],
        "name": presence["name"],
        "joined_at": presence["joined_at"],
        "media": presence["media"],
    }
