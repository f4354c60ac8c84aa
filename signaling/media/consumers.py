"""The server room socket (``/ws/media/<slug>/``): echo and relay rooms.

Each participant's socket owns a ``MediaSession`` (``rooms.py``): the browser offers, the
server's aiortc peer answers, candidates trickle in, and the page gets ``media-stats``. The
place in the room, heartbeats and presence events are ``RoomConsumer``'s, as in mesh rooms.
This path is what docs/deploy.md sends to media processes.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from presence.backends.base import Presence
from rtcsite.errors import ClientError, Conflict
from rtcsite.process import PROCESS_ID
from signaling.consumers import RoomConsumer
from signaling.media.rooms import SERVER_KINDS, MediaSession, joined_elsewhere, live_members
from signaling.messages import clean_candidate, clean_description


class MediaRoomConsumer(RoomConsumer):
    """One participant of an echo or relay room and its server peer."""

    kinds = SERVER_KINDS

    media: MediaSession | None = None

    async def on_join(self, members: list[Presence]) -> None:
        if self.room.kind == "relay":
            members = await live_members(members)
        if joined_elsewhere(self.room.kind, self.peer_id, members, PROCESS_ID):
            raise Conflict(
                "The other participant of this relay room is connected to another server "
                "process; try again (the load balancer should route a room to one process).",
                code="media-elsewhere",
            )
        self.media = MediaSession(
            self.room.kind,
            self.room.slug,
            self.peer_id,
            self.send_json,
            identity=self.identity.id,
            address=self.client_address,
        )

    def welcome_fields(self) -> dict[str, Any]:
        return {"recording_available": settings.SERVER_ROOM_RECORDINGS}

    async def _leave(self) -> None:
        media, self.media = self.media, None
        if media is not None:
            await media.close()
        await super()._leave()

    def _session(self) -> MediaSession:
        self.require_joined()
        if self.media is None:
            raise ClientError("Join the room before signaling.", code="not-joined")
        return self.media

    async def handle_offer(self, content: dict[str, Any]) -> None:
        offer = clean_description(content, "offer")
        await self._session().offer(offer["sdp"])

    async def handle_answer(self, content: dict[str, Any]) -> None:
        raise ClientError("In server rooms the browser offers and the server answers.")

    async def handle_candidate(self, content: dict[str, Any]) -> None:
        candidate = clean_candidate(content)
        await self._session().candidate(candidate["candidate"])

    async def handle_echo_options(self, content: dict[str, Any]) -> None:
        """``{"type": "echo-options", "faces": bool}``: boxes drawn into the echo."""
        faces = content.get("faces")
        if not isinstance(faces, bool):
            raise ClientError("echo-options needs a boolean 'faces'.")
        if self.room.kind != "echo":
            raise ClientError("echo-options is for echo rooms only.")
        self._session().set_faces(faces)

    async def handle_record(self, content: dict[str, Any]) -> None:
        """``{"type": "record", "on": bool}``: server-side recording of what we send."""
        on = content.get("on")
        if not isinstance(on, bool):
            raise ClientError("record needs a boolean 'on'.")
        await self._session().set_recording(on, self.identity.id, self.identity.name)
