"""WebSocket ingest: ``/ws/streams/<slug>/ingest/`` (docs/protocol.md, "Live stream ingest").

After the usual token handshake the publisher sends ``{"type": "publish", "key": ...}``
and optionally ``{"type": "clock", "capture_ms": ...}`` (streaming/clock.py); then each
binary frame is one chunk: a 4-byte big-endian sequence number followed by the
WebM bytes. Every chunk is answered with ``ack`` or an ``error`` carrying its ``seq``. A
refused chunk (not WebM, too large, busy) never closes the socket: the stream carries on.
"""

from __future__ import annotations

import logging
import secrets
import struct
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from identity.websocket import AuthenticatedJsonConsumer, CloseCode, ProtocolError
from presence import services as presence
from streaming import services
from streaming.clock import ClockError, check_capture_ms

logger = logging.getLogger(__name__)

SEQ_HEADER = struct.Struct(">I")


class StreamIngestConsumer(AuthenticatedJsonConsumer):
    #: chunks are also rate-limited per stream by services.feed_chunk
    rate_limit = (50.0, 100)

    slug: str
    key: str | None = None
    capture_ms: int | None = None

    async def on_connect(self) -> None:
        self.slug = self.scope["url_route"]["kwargs"]["slug"]
        self.key = None
        self.capture_ms = None

    def log_context(self) -> str:
        return f"{super().log_context()} stream={getattr(self, 'slug', '-')}"

    async def handle_publish(self, content: dict[str, Any]) -> None:
        key = content.get("key")
        if not isinstance(key, str):
            raise ProtocolError("key-missing", "Send 'key': the stream's publish key.")
        try:
            stream = await services.authenticate(self.slug, key)
        except services.StreamNotFound as exc:
            await self.send_error(exc.code, exc.message, "publish")
            await self.close(code=CloseCode.NOT_FOUND, reason=exc.code)
            return
        except services.IngestError as exc:
            logger.info("ws ingest refused (%s): %s", self.log_context(), exc.code)
            await self.send_error(exc.code, exc.message, "publish")
            await self.close(code=CloseCode.FORBIDDEN, reason=exc.code)
            return
        self.key = key
        await self.send_json(
            {
                "type": "ready",
                "stream": stream.slug,
                "status": stream.status,
                "max_chunk_bytes": services.max_chunk_bytes(),
            }
        )

    async def receive_bytes(self, data: bytes) -> None:
        if self.key is None:
            await self._reject("not-publishing", "Send 'publish' with the key before chunks.")
            return
        if len(data) <= SEQ_HEADER.size:
            await self._reject("invalid", "A chunk frame is a 4-byte sequence number + data.")
            return
        (seq,) = SEQ_HEADER.unpack_from(data)
        try:
            reply = await services.feed_chunk(
                self.slug, self.key, seq, data[SEQ_HEADER.size :], capture_ms=self.capture_ms
            )
        except services.Busy as exc:
            # Not the client's fault: not counted towards the bad-message limit.
            await self.send_error(exc.code, exc.message, "chunk", seq=seq, retry_after=1)
            return
        except (services.KeyRefused, services.KeyMissing, services.StreamNotFound) as exc:
            await self.send_error(exc.code, exc.message, "chunk", seq=seq)
            await self.close(code=CloseCode.FORBIDDEN, reason=exc.code)
            return
        except services.IngestError as exc:
            await self._reject(exc.code, exc.message, "chunk", seq=seq)
            return
        self._errors = 0
        await self.send_json({"type": "ack", **reply})

    async def handle_clock(self, content: dict[str, Any]) -> None:
        """``{"type": "clock", "capture_ms": N}`` before the first chunk: the capture clock
        (epoch ms of media time 0, synced with /streams/time/) anchoring the timelines."""
        try:
            self.capture_ms = check_capture_ms(content.get("capture_ms"))
        except ClockError as exc:
            raise ProtocolError("bad-clock", str(exc)) from exc
        await self.send_json({"type": "clock", "capture_ms": self.capture_ms})

    async def handle_stop(self, content: dict[str, Any]) -> None:
        if self.key is None:
            raise ProtocolError("not-publishing", "Send 'publish' with the key first.")
        try:
            reply = await services.stop_stream(self.slug, self.key)
        except services.IngestError as exc:
            raise ProtocolError(exc.code, exc.message) from exc
        await self.send_json({"type": "stopped", **reply})


class StreamViewerConsumer(AuthenticatedJsonConsumer):
    """``/ws/streams/<slug>/watch/``: one per open viewer page; read-only.

    The connection counts as a viewer (a presence in the stream's viewer room, expiring
    without heartbeats like any room's). The server sends ``welcome`` (stream status and
    viewer count), then ``viewers`` on every join/leave and ``stream`` when the stream
    goes live, ends or fails. Clients send only ``ping`` (the heartbeat).
    """

    slug: str
    conn_id: str
    watching: bool = False

    async def on_connect(self) -> None:
        self.slug = self.scope["url_route"]["kwargs"]["slug"]
        info = await database_sync_to_async(services.status)(self.slug)
        if info is None:
            await self.send_error("not-found", "No such stream.")
            await self.close(code=CloseCode.NOT_FOUND, reason="not-found")
            return
        self.conn_id = secrets.token_hex(6)
        room = services.viewer_room(self.slug)
        await self.channel_layer.group_add(services.viewer_group(self.slug), self.channel_name)
        await presence.join(
            room,
            self.conn_id,
            channel=self.channel_name,
            user_id=self.identity.id,
            name=self.identity.name,
            capacity=None,
        )
        self.watching = True
        await self.send_json(
            {
                "type": "welcome",
                "you": {"peer": self.conn_id, **self.identity.as_dict()},
                "stream": info,
                "viewers": await services.viewer_count(self.slug),
                "heartbeat_interval": settings.PRESENCE_HEARTBEAT_INTERVAL,
            }
        )

    def log_context(self) -> str:
        return f"{super().log_context()} watching={getattr(self, 'slug', '-')}"

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._leave()

    async def disconnect(self, code: int) -> None:
        await self._leave()

    async def _leave(self) -> None:
        if self.watching:
            self.watching = False
            await self.channel_layer.group_discard(
                services.viewer_group(self.slug), self.channel_name
            )
            await presence.leave(services.viewer_room(self.slug), self.conn_id)

    async def handle_ping(self, content: dict[str, Any]) -> None:
        """Pings double as presence heartbeats (re-join if our presence expired)."""
        room = services.viewer_room(self.slug)
        if self.watching and not await presence.heartbeat(room, self.conn_id):
            await presence.join(
                room,
                self.conn_id,
                channel=self.channel_name,
                user_id=self.identity.id,
                name=self.identity.name,
                capacity=None,
            )
        await super().handle_ping(content)

    async def _send_count(self) -> None:
        if self.watching:
            count = await services.viewer_count(self.slug)
            await self.send_json({"type": "viewers", "count": count})

    async def presence_joined(self, event: dict[str, Any]) -> None:
        await self._send_count()

    async def presence_left(self, event: dict[str, Any]) -> None:
        await self._send_count()

    async def presence_media(self, event: dict[str, Any]) -> None:
        """Viewers have no media state; nothing to forward."""

    async def stream_status(self, event: dict[str, Any]) -> None:
        if self.watching:
            await self.send_json(
                {"type": "stream", "status": event["status"], "reason": event.get("reason", "")}
            )
