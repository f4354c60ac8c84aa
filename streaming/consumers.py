"""WebSocket ingest: ``/ws/streams/<slug>/ingest/`` (docs/protocol.md, "Live stream ingest").

After the usual token handshake the publisher sends ``{"type": "publish", "key": ...}``;
then each binary frame is one chunk: a 4-byte big-endian sequence number followed by the
WebM bytes. Every chunk is answered with ``ack`` or an ``error`` carrying its ``seq``. A
refused chunk (not WebM, too large, busy) never closes the socket: the stream carries on.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from identity.websocket import AuthenticatedJsonConsumer, CloseCode, ProtocolError
from streaming import services

logger = logging.getLogger(__name__)

SEQ_HEADER = struct.Struct(">I")


class StreamIngestConsumer(AuthenticatedJsonConsumer):
    #: chunks are also rate-limited per stream by services.feed_chunk
    rate_limit = (50.0, 100)

    slug: str
    key: str | None = None

    async def on_connect(self) -> None:
        self.slug = self.scope["url_route"]["kwargs"]["slug"]
        self.key = None

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
            reply = await services.feed_chunk(self.slug, self.key, seq, data[SEQ_HEADER.size :])
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

    async def handle_stop(self, content: dict[str, Any]) -> None:
        if self.key is None:
            raise ProtocolError("not-publishing", "Send 'publish' with the key first.")
        try:
            reply = await services.stop_stream(self.slug, self.key)
        except services.IngestError as exc:
            raise ProtocolError(exc.code, exc.message) from exc
        await self.send_json({"type": "stopped", **reply})
