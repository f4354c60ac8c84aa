"""The lobby WebSocket: a snapshot of who is where, then live join/leave deltas."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings

from presence import services
from rtcsite.ws.codes import PROTOCOL_VERSION
from rtcsite.ws.consumer import JsonSocketConsumer
from rtcsite.ws.service import service

_snapshot: asyncio.Future[dict[str, Any]] | None = None


async def _shared_snapshot() -> dict[str, Any]:
    """``services.lobby_snapshot()``, joined by every caller while one is in flight."""
    global _snapshot
    loop = asyncio.get_running_loop()
    if _snapshot is None or _snapshot.done() or _snapshot.get_loop() is not loop:
        _snapshot = asyncio.ensure_future(services.lobby_snapshot())
    return await asyncio.shield(_snapshot)


class LobbyConsumer(JsonSocketConsumer):
    """``/ws/lobby/``: one per open lobby page."""

    close_db_per_message = False  # no database access at all

    async def on_connect(self) -> None:
        room_service = service()
        room_service.require_up()
        await room_service.group_add(self.channel_layer, services.LOBBY_GROUP, self.channel_name)
        services.ensure_sweeper()
        await self.send_json(
            {"type": "hello", "protocol": PROTOCOL_VERSION, "you": self.identity.as_dict()}
        )
        await self.send_lobby_state()

    async def send_lobby_state(self) -> None:
        await self.send_json(
            {
                "type": "lobby-state",
                **await services.lobby_snapshot(),
                "names_per_card": settings.LOBBY_NAMES_PER_CARD,
            }
        )

    async def resync_client(self) -> None:
        """The room service is back: a fresh snapshot (deltas were lost meanwhile), one read
        shared by the process's lobby sockets resyncing together."""
        await self.send_json(
            {
                "type": "lobby-state",
                **await _shared_snapshot(),
                "names_per_card": settings.LOBBY_NAMES_PER_CARD,
            }
        )

    async def disconnect(self, code: int) -> None:
        await service().group_discard(self.channel_layer, services.LOBBY_GROUP, self.channel_name)

    async def lobby_frames(self, event: dict[str, Any]) -> None:
        """Coalesced ``presence`` deltas (``services.LobbyBatcher``), already JSON."""
        for frame in event["frames"]:
            await self.send(text_data=frame)

    async def lobby_room(self, event: dict[str, Any]) -> None:
        """A room was created (``services.announce_new_room``): its card is not listed yet."""
        await self.send_json({"type": "room", "slug": event["slug"], "kind": event["kind"]})

    async def lobby_stream(self, event: dict[str, Any]) -> None:
        """A live stream went live, ended or failed (streaming.services.announce_status)."""
        await self.send_json(
            {
                "type": "stream",
                "slug": event["slug"],
                "status": event["status"],
                "reason": event.get("reason", ""),
            }
        )
