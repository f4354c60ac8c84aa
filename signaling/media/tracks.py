"""Media plumbing for server peers: latest-frame sources and switchable outgoing tracks.

aiortc's ``RemoteStreamTrack`` puts every decoded frame in an unbounded queue and only
``recv()`` takes them out. A consumer that is slower than the camera (or absent: a relay
room with one person) makes that queue grow, and the latency with it: the build-up
aiortc users report. So every incoming track gets a ``FrameSource`` whose reader task
drains it constantly and keeps only the newest video frame (and the last few audio
frames: 20 ms each, so a short hiccup of the event loop does not cut the sound); a
consumer asks for "the next frame after the one I took" and, when it has fallen behind,
gets the newest instead. Slow consumers skip frames instead of falling behind.

Outgoing tracks are ``SlotTrack``: one per sender of a server peer, whose source can be
switched (the relay room plugs the other participant in and out) without renegotiation.
It restamps frames with its own clock so timestamps never jump backwards when the
source changes (a rejoining participant's decoder starts again at 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame
from av.frame import Frame

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
#: frames kept per kind: video only the newest; audio 100 ms (a hiccup, not a backlog)
KEEP = {"video": 1, "audio": 5}

#: A frame transform run on the event loop before a frame is sent (must be cheap).
FrameFilter = Callable[[Frame], Frame]


class FrameSource:
    """The newest frame of one incoming track, read by one task that never falls behind."""

    def __init__(self, track: MediaStreamTrack, name: str = "") -> None:
        self.track = track
        self.kind = track.kind
        self.name = name
        self._kept: deque[tuple[int, Frame]] = deque(maxlen=KEEP.get(self.kind, 1))
        self.seq = 0  # number of the newest frame; consumers remember the last they took
        self.frames_in = 0
        self.ended = False
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read(), name=f"frame-source {name} {self.kind}")

    async def _read(self) -> None:
        try:
            while True:
                try:
                    frame = await self.track.recv()
                except MediaStreamError:
                    break
                self.seq += 1
                self._kept.append((self.seq, frame))
                self.frames_in += 1
                async with self._changed:
                    self._changed.notify_all()
        finally:
            self.ended = True
            async with self._changed:
                self._changed.notify_all()

    @property
    def frame(self) -> Frame | None:
        """The newest frame (``None`` before the first)."""
        return self._kept[-1][1] if self._kept else None

    async def next_frame(self, after: int) -> tuple[int, Frame] | None:
        """The oldest kept frame numbered above ``after``; ``None`` once the track ended."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.seq > after or self.ended)
        for seq, frame in self._kept:
            if seq > after:
                return seq, frame
        return None

    async def wait_ended(self) -> None:
        """Until the incoming track has ended and every frame of it was read."""
        await asyncio.shield(self._task)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class SlotTrack(MediaStreamTrack):
    """An outgoing track showing whichever ``FrameSource`` is plugged in (or nothing).

    With no source, ``recv()`` simply waits: the sender sends nothing and the browser's
    video holds its last picture until a source is plugged in again.
    """

    def __init__(self, kind: str, frame_filter: FrameFilter | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.frame_filter = frame_filter
        self.frames_out = 0
        self._source: FrameSource | None = None
        self._seen = 0
        self._plugged = asyncio.Event()
        self._start: float | None = None
        self._audio_pts = 0

    @property
    def source(self) -> FrameSource | None:
        return self._source

    def plug(self, source: FrameSource | None) -> None:
        """Show ``source`` from its next frame on (``None``: show nothing)."""
        self._source = source
        self._seen = source.seq if source is not None else 0
        if source is None:
            self._plugged.clear()
        else:
            self._plugged.set()

    async def recv(self) -> Frame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self._source
            if source is None or source.ended:
                self._plugged.clear()
                await self._plugged.wait()
                continue
            got = await source.next_frame(self._seen)
            if got is None or source is not self._source:
                continue  # the source ended or was swapped while we waited
            self._seen, frame = got
            if self.frame_filter is not None:
                frame = self.frame_filter(frame)
            self.frames_out += 1
            return self._restamp(frame)

    def _restamp(self, frame: Frame) -> Frame:
        """Our own monotonic timestamps: a new source must not make them jump back."""
        if isinstance(frame, AudioFrame):
            frame.pts = self._audio_pts
            frame.time_base = fractions.Fraction(1, frame.sample_rate)
            self._audio_pts += frame.samples
        elif isinstance(frame, VideoFrame):
            now = time.monotonic()
            if self._start is None:
                self._start = now
            frame.pts = int((now - self._start) * VIDEO_CLOCK)
            frame.time_base = VIDEO_TIME_BASE
        return frame

    def stop(self) -> None:
        super().stop()
        self._source = None
        self._plugged.set()  # wake recv() so it sees the track ended
