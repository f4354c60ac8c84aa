"""Pushed-frame face detection over a WebSocket, ``/ws/faces/`` (docs/protocol.md, "Faces").

After the token handshake the server sends ``hello`` with the limits. Each binary message is
one image (WebP, JPEG or PNG); it is answered with ``faces`` (boxes in that image's pixels)
or an ``error`` with ``ref: "frame"``. ``{"type": "params", "params": {...}}`` sets this
connection's detection parameters. A refused frame never closes the socket.

Detection runs as a task so that this consumer keeps reading: a frame that arrives while the
previous one is being detected is answered ``busy`` at once (Channels hands a consumer its
messages one at a time, so awaiting the detection here would queue frames instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from faces import services
from rtcsite.errors import ClientError
from rtcsite.ws.consumer import JsonSocketConsumer

logger = logging.getLogger(__name__)


class FaceFramesConsumer(JsonSocketConsumer):
    # The base bucket counts every message; frames have their own (FACE_MAX_FPS) below.
    rate_limit = (100.0, 200)

    session: services.FrameSession
    task: asyncio.Task | None = None

    async def on_connect(self) -> None:
        self.session = services.FrameSession(self.identity.id)
        self.task = None
        await self.send_json(
            {"type": "hello", "limits": services.limits(), "params": self._params_dict()}
        )

    def _params_dict(self) -> dict[str, Any]:
        params = self.session.params
        return {name: getattr(params, name) for name in (*params.LIMITS, "equalize")}

    async def handle_params(self, content: dict[str, Any]) -> None:
        self.session.set_params(content.get("params"))
        await self.send_json({"type": "params", "params": self._params_dict()})

    async def receive_bytes(self, data: bytes) -> None:
        try:
            number = self.session.admit()
        except ClientError as exc:
            # Dropped (busy or over the rate), not a protocol fault: not counted towards
            # closing the socket.
            exc.details["frame"] = self.session.frames
            await self.send_error(exc, "frame")
            return
        self.task = asyncio.get_running_loop().create_task(self._detect(number, data))

    async def _detect(self, number: int, data: bytes) -> None:
        await self.guard(self._detect_and_reply(number, data), "frame")

    async def _detect_and_reply(self, number: int, data: bytes) -> None:
        try:
            result = await self.session.detect(data)
        except ClientError as exc:
            exc.details["frame"] = number
            raise
        except Exception:
            logger.exception("face detection failed (%s)", self.log_context())
            error = ClientError("Detection failed.", code="server-error", status=500, frame=number)
            await self.send_error(error, "frame")
            return
        await self.send_json({"type": "faces", "frame": number, **result.as_dict()})

    async def disconnect(self, code: int) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
