"""A Python participant for echo and relay rooms (tests, benchmarks, a reference client).

It speaks the room socket's protocol like the browser page does: offer with its own
tracks, trickle its candidates as separate ``candidate`` messages (aiortc puts them in
the SDP; they are moved out to exercise the server's trickle path), apply the answer,
and count the frames it gets back. The transport is two callables, so the same client
runs over Channels' ``WebsocketCommunicator`` or a real WebSocket to Daphne.

``PatternTrack`` sends a fixed picture (e.g. the astronaut) with a frame number drawn
into its top rows as 16 black/white blocks; ``read_stamp`` reads the number back from a
returned frame, which is how the benchmark measures the echo's added latency.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from av import VideoFrame

STAMP_BITS = 16
STAMP_BLOCK = (16, 32)  # height, width of one bit's block (survives VP8 compression)
VIDEO_CLOCK = 90_000

Send = Callable[[dict[str, Any]], Awaitable[None]]


def bgr_to_i420(image: np.ndarray) -> np.ndarray:
    """BGR image (even size) → PyAV's yuv420p ndarray layout."""
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)


def stamp(planes: np.ndarray, number: int) -> None:
    """Write ``number`` (16 bits) into the top-left luma of an I420 array, in place."""
    bh, bw = STAMP_BLOCK
    for bit in range(STAMP_BITS):
        value = 235 if (number >> bit) & 1 else 16
        planes[0:bh, bit * bw : (bit + 1) * bw] = value


def read_stamp(frame: VideoFrame) -> int:
    """The number ``stamp`` wrote, read back from a decoded frame."""
    bh, bw = STAMP_BLOCK
    luma = frame.to_ndarray(format="gray")
    number = 0
    for bit in range(STAMP_BITS):
        block = luma[bh // 4 : 3 * bh // 4, bit * bw + bw // 4 : bit * bw + 3 * bw // 4]
        if block.mean() > 128:
            number |= 1 << bit
    return number


class PatternTrack(MediaStreamTrack):
    """A camera stand-in: one picture at ``fps``, each frame numbered (see ``stamp``)."""

    kind = "video"

    def __init__(self, image_bgr: np.ndarray, fps: float = 20.0, numbered: bool = True) -> None:
        super().__init__()
        self.planes = bgr_to_i420(image_bgr)
        self.fps = fps
        self.numbered = numbered
        self.sent = 0
        self.sent_at: dict[int, float] = {}  # stamp → monotonic send time (last 512)
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self.sent / self.fps
        if due > now:
            await asyncio.sleep(due - now)
        planes = self.planes
        number = self.sent & 0xFFFF
        if self.numbered:
            planes = planes.copy()
            stamp(planes, number)
        frame = VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = int(self.sent * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent_at[number] = time.monotonic()
        self.sent_at.pop((number - 512) & 0xFFFF, None)
        self.sent += 1
        return frame


@dataclass
class Received:
    """What came back on one incoming track."""

    kind: str
    frames: int = 0
    last: Any = None
    first_at: float | None = None
    arrivals: list[float] = field(default_factory=list)  # monotonic, last 200
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class ServerRoomClient:
    """One participant negotiating with the server peer over a room socket."""

    def __init__(
        self,
        send: Send,
        tracks: list[MediaStreamTrack] | None = None,
        *,
        trickle: bool = True,
        keep_frames: bool = True,
    ) -> None:
        self.send = send
        self.tracks = tracks if tracks is not None else []
        self.trickle = trickle
        self.keep_frames = keep_frames
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.received: dict[str, Received] = {}
        self.errors: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []
        self.other: list[dict[str, Any]] = []
        self.answered = asyncio.Event()
        self.track_added = asyncio.Event()
        self.on_frame: Callable[[str, Any], None] | None = None
        self._tasks: set[asyncio.Task] = set()
        self.pc.on("track", self._on_track)

    @staticmethod
    def default_tracks(image_bgr: np.ndarray, fps: float = 20.0) -> list[MediaStreamTrack]:
        return [PatternTrack(image_bgr, fps), AudioStreamTrack()]

    async def offer(self, *, sdp_override: str | None = None) -> str:
        """Send an offer (our tracks, sendrecv); returns the SDP as sent."""
        for track in self.tracks:
            self.pc.addTransceiver(track, direction="sendrecv")
        if not self.tracks:
            self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        candidates: list[str] = []
        if self.trickle:
            lines = sdp.split("\r\n")
            candidates = [ln[2:] for ln in lines if ln.startswith("a=candidate:")]
            sdp = "\r\n".join(
                ln for ln in lines if not ln.startswith(("a=candidate:", "a=end-of-candidates"))
            )
        sdp = sdp_override if sdp_override is not None else sdp
        await self.send({"type": "offer", "sdp": sdp})
        ufrag = next(
            (ln.split(":", 1)[1] for ln in sdp.split("\r\n") if ln.startswith("a=ice-ufrag:")),
            None,
        )
        seen: set[str] = set()
        for text in candidates:
            if text in seen:  # with BUNDLE every section repeats the same candidates
                continue
            seen.add(text)
            await self.send(
                {
                    "type": "candidate",
                    "candidate": {
                        "candidate": text,
                        "sdpMid": "0",
                        "sdpMLineIndex": 0,
                        "usernameFragment": ufrag,
                    },
                }
            )
        if candidates:
            await self.send({"type": "candidate", "candidate": None})
        return sdp

    async def handle(self, message: dict[str, Any]) -> None:
        """Feed one message from the room socket."""
        kind = message.get("type")
        if kind == "answer":
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=message["sdp"], type="answer")
            )
            self.answered.set()
        elif kind == "error":
            self.errors.append(message)
        elif kind == "media-stats":
            self.stats.append(message)
        else:
            self.other.append(message)

    def pump(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> asyncio.Task:
        """Read the socket in a task, handing every message to ``handle``."""

        async def run() -> None:
            while True:
                await self.handle(await receive())

        return self._spawn(run())

    def _on_track(self, track: MediaStreamTrack) -> None:
        got = self.received.setdefault(track.kind, Received(track.kind))
        self.track_added.set()
        self._spawn(self._read(track, got))

    async def _read(self, track: MediaStreamTrack, got: Received) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            got.frames += 1
            got.first_at = got.first_at or now
            got.arrivals.append(now)
            del got.arrivals[:-200]
            if self.keep_frames:
                got.last = frame
            if self.on_frame is not None:
                self.on_frame(track.kind, frame)
            got.changed.set()

    async def wait_frames(self, kind: str, count: int, within: float) -> Received:
        """Until ``count`` more frames of ``kind`` arrived (fails after ``within`` s)."""

        async def wait() -> Received:
            while kind not in self.received:
                self.track_added.clear()
                await self.track_added.wait()
            got = self.received[kind]
            target = got.frames + count
            while got.frames < target:
                got.changed.clear()
                await got.changed.wait()
            return got

        return await asyncio.wait_for(wait(), within)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for track in self.tracks:
            track.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()
