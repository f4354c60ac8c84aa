"""WebSocket ingest: ``/ws/streams/<slug>/ingest/`` (docs/protocol.md, "Live stream ingest").

After the usual token handshake the publisher sends ``{"type": "publish", "key": ...}``
and optionally ``{"type": "clock", "capture_ms": ...}`` (streaming/clock.py); then each
binary frame is one chunk: a 4-byte big-endian sequence number followed by the
WebM bytes. Every chunk is answered with ``ack`` or an ``error`` carrying its ``seq``. A
refused chunk (not WebM, too large, busy) never closes the socket: the stream carries on.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from presence import membership
from presence.membership import Membership
from rtcsite import logctx
from rtcsite.errors import ClientError, NotFound
from rtcsite.ws.codes import CloseCode
from rtcsite.ws.consumer import JsonSocketConsumer
from streaming import ingest, services
from streaming.clock import ClockError, check_capture_ms

logger = logging.getLogger(__name__)

SEQ_HEADER = struct.Struct(">I")


class StreamIngestConsumer(JsonSocketConsumer):
    #: chunks are also rate-limited per stream by ingest.feed_chunk
    rate_limit = (50.0, 100)
    binary_ref = "chunk"

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
            raise ClientError("Send 'key': the stream's publish key.", code="key-missing")
        try:
            stream = await ingest.authenticate(self.slug, key)
        except ClientError as exc:
            logger.info("ws ingest refused (%s): %s", self.log_context(), exc.code)
            close = CloseCode.NOT_FOUND if exc.status == 404 else CloseCode.FORBIDDEN
            await self.refuse(exc, close, "publish")
            return
        self.key = key
        await self.send_json(
            {
                "type": "ready",
                "stream": stream.slug,
                "status": stream.status,
                "max_chunk_bytes": settings.STREAM_MAX_CHUNK_BYTES,
            }
        )

    async def receive_bytes(self, data: bytes) -> None:
        if self.key is None:
            raise ClientError("Send 'publish' with the key before chunks.", code="not-publishing")
        if len(data) <= SEQ_HEADER.size:
            raise ClientError("A chunk frame is a 4-byte sequence number + data.", code="invalid")
        (seq,) = SEQ_HEADER.unpack_from(data)
        try:
            reply = await ingest.feed_chunk(
                self.slug,
                self.key,
                seq,
                data[SEQ_HEADER.size :],
                capture_ms=self.capture_ms,
                address=self.client_address,
            )
        except ClientError as exc:
            exc.details.setdefault("seq", seq)
            if exc.status in (401, 403, 404):  # the key or the stream is gone: stop here
                await self.refuse(exc, CloseCode.FORBIDDEN, "chunk")
                return
            raise
        await self.send_json({"type": "ack", **reply})

    async def handle_clock(self, content: dict[str, Any]) -> None:
        """``{"type": "clock", "capture_ms": N}`` before the first chunk: the capture clock
        (epoch ms of media time 0, synced with /streams/time/) anchoring the timelines."""
        try:
            self.capture_ms = check_capture_ms(content.get("capture_ms"))
        except ClockError as exc:
            raise ClientError(str(exc), code="bad-clock") from exc
        await self.send_json({"type": "clock", "capture_ms": self.capture_ms})

    async def handle_stop(self, content: dict[str, Any]) -> None:
        if self.key is None:
            raise ClientError("Send 'publish' with the key first.", code="not-publishing")
        reply = await ingest.stop_stream(self.slug, self.key)
        await self.send_json({"type": "stopped", **reply})


class StreamViewerConsumer(JsonSocketConsumer):
    """``/ws/streams/<slug>/watch/``: one per open viewer page; read-only.

    The connection counts as a viewer: a place in the stream's viewer room
    (``presence.membership``, no capacity), expiring without heartbeats like any room's.
    The server sends ``welcome`` (stream status and viewer count), then ``viewers`` when the
    count changes (coalesced: one message for a burst of joins, never a member list) and
    ``stream`` when the stream goes live, ends or fails. Clients send only
    ``ping`` (the heartbeat).
    """

    close_db_per_message = False  # the one query runs in database_sync_to_async

    slug: str
    place: Membership | None = None
    count_at: int = 0  # backend time ``at`` of the last count sent (a class default until set)

    async def on_connect(self) -> None:
        self.slug = self.scope["url_route"]["kwargs"]["slug"]
        info = await database_sync_to_async(services.status)(self.slug)
        if info is None:
            await self.refuse(NotFound("No such stream."), CloseCode.NOT_FOUND)
            return
        self.place, members = await membership.join(
            self.channel_layer,
            self.channel_name,
            services.viewer_room(self.slug),
            self.identity,
            capacity=None,
        )
        logctx.bind(peer=self.place.peer_id)
        await self.send_json(self.place.welcome(stream=info, viewers=len(members)))

    def log_context(self) -> str:
        return f"{super().log_context()} watching={getattr(self, 'slug', '-')}"

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await membership.leave(self.place)

    async def disconnect(self, code: int) -> None:
        await membership.leave(self.place)

    async def handle_ping(self, content: dict[str, Any]) -> None:
        """Pings double as presence heartbeats (the place is taken back if it expired)."""
        await membership.heartbeat(self.place)
        await super().handle_ping(content)

    async def presence_count(self, event: dict[str, Any]) -> None:
        """The audience's count changed (``presence.services.AudienceCounts``, coalesced):
        forward it unless a newer count was already sent."""
        if self.place is None or not self.place.joined or event["at"] < self.count_at:
            return
        self.count_at = event["at"]
        await self.send_json({"type": "viewers", "count": event["count"]})

    async def stream_status(self, event: dict[str, Any]) -> None:
        if self.place is not None and self.place.joined:
            await self.send_json(
                {"type": "stream", "status": event["status"], "reason": event.get("reason", "")}
            )
