"""The room WebSocket (``/ws/rooms/<slug>/``): join, presence, heartbeats.

Every kind of room uses it: joining tracks this connection's presence (capacity
enforced atomically by the presence backend), the server assigns the peer id, sends
``welcome`` with the people already there, and tells them ``peer-joined``. Leaving,
disconnecting or missing heartbeats produces ``peer-left``. The media features add their
own messages (SDP/ICE relay for mesh rooms, the aiortc peer for server rooms).
"""

from __future__ import annotations

import secrets
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from identity.websocket import AuthenticatedJsonConsumer, CloseCode, ProtocolError
from presence import services as presence
from presence.backends.base import RoomFull
from rooms.models import Room
from rooms.services import get_room
from rtcsite.ice import client_ice_servers

MEDIA_KEYS = ("audio", "video")


class RoomConsumer(AuthenticatedJsonConsumer):
    """One participant's connection to one room."""

    room: Room
    peer_id: str
    joined: bool = False

    async def on_connect(self) -> None:
        slug = self.scope["url_route"]["kwargs"]["slug"]
        room = await database_sync_to_async(get_room)(slug)
        if room is None:
            await self.send_error("not-found", "No such room.")
            await self.close(code=CloseCode.NOT_FOUND, reason="not-found")
            return
        if not room.is_open:
            await self.send_error("room-closed", "This room is closed.")
            await self.close(code=CloseCode.FORBIDDEN, reason="room-closed")
            return
        self.room = room
        self.peer_id = secrets.token_hex(6)  # per connection: two tabs are two peers
        try:
            await presence.join(
                room.slug,
                self.peer_id,
                channel=self.channel_name,
                user_id=self.identity.id,
                name=self.identity.name,
                capacity=room.capacity,
            )
        except RoomFull:
            await self.send_error(
                "room-full", f"“{room.title}” is full ({room.capacity} participants)."
            )
            await self.close(code=CloseCode.ROOM_FULL, reason="room-full")
            return
        self.joined = True
        await self.channel_layer.group_add(presence.room_group(room.slug), self.channel_name)
        others = [p for p in await presence.members(room.slug) if p.conn_id != self.peer_id]
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
                "heartbeat_interval": settings.PRESENCE_HEARTBEAT_INTERVAL,
            }
        )

    async def disconnect(self, code: int) -> None:
        if self.joined:
            self.joined = False
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
        await self.close(code=1000)

    async def handle_media(self, content: dict[str, Any]) -> None:
        """``{"type": "media", "audio": bool, "video": bool}``: shown on others' tiles."""
        media = {k: content[k] for k in MEDIA_KEYS if k in content}
        if not media or not all(isinstance(v, bool) for v in media.values()):
            raise ProtocolError("bad-message", "media needs boolean 'audio' and/or 'video'.")
        await presence.set_media(self.room.slug, self.peer_id, media)

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
            await self.send_error("room-full", "Your place expired and the room filled up.")
            await self.close(code=CloseCode.ROOM_FULL, reason="room-full")

    # --- group events ---------------------------------------------------------------------

    async def presence_joined(self, event: dict[str, Any]) -> None:
        if event["presence"]["conn_id"] != self.peer_id:
            await self.send_json({"type": "peer-joined", **_public(event["presence"])})

    async def presence_left(self, event: dict[str, Any]) -> None:
        if event["presence"]["conn_id"] == self.peer_id:
            return
        message = {"type": "peer-left", "peer": event["presence"]["conn_id"]}
        if event.get("reason"):
            message["reason"] = event["reason"]
        await self.send_json(message)

    async def presence_media(self, event: dict[str, Any]) -> None:
        if event["presence"]["conn_id"] != self.peer_id:
            await self.send_json(
                {
                    "type": "peer-media",
                    "peer": event["presence"]["conn_id"],
                    "media": event["presence"]["media"],
                }
            )


def _public(presence: dict[str, Any]) -> dict[str, Any]:
    return {
        "peer": presence["conn_id"],
        "user": presence["peer_id"],
        "name": presence["name"],
        "joined_at": presence["joined_at"],
        "media": presence["media"],
    }
