"""Server-side recording of one participant's incoming media to WebM (VP8 + Opus).

aiortc's ``MediaRecorder`` encodes on the event loop (``stream.encode`` inside its reader
task): a 640x480 VP8 encode per frame there would stall every socket of the process. So
this recorder reads the same ``FrameSource``s as the outgoing slots (newest video frame,
a few audio frames; it never makes the incoming track queue up) and hands each frame to
a thread of its own, which owns the PyAV container: encoding, muxing and closing all
happen in that one thread. A slow encoder makes the recording skip video frames, never
the call lag.

Frames are shared with the slots, so they are copied before being restamped here.

Files are private: they go to ``RECORDINGS_ROOT`` (outside the public ``MEDIA_ROOT``)
under a random name, and stop at ``RECORDING_MAX_BYTES`` / ``RECORDING_MAX_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
from av import AudioFrame, VideoFrame

from signaling.media.tracks import FrameSource

logger = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 1000)
VIDEO_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "b": "1000000"}


class SessionRecorder:
    """Records ``sources`` (kind → FrameSource) to ``path`` until ``stop()``, or until the
    file reaches ``max_bytes`` or ``max_seconds``: then it writes nothing more (the file
    stays whole) and calls ``on_limit`` once, on the loop, so its owner can ``stop()``."""

    def __init__(
        self,
        sources: dict[str, FrameSource],
        path: Path,
        *,
        max_bytes: int,
        max_seconds: float,
        on_limit: Callable[[str], None] | None = None,
    ) -> None:
        self.sources = dict(sources)
        self.path = path
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.on_limit = on_limit
        #: "size" or "duration" once a cap was reached
        self.limit: str | None = None
        self.bytes_written = 0
        self.frames = {"video": 0, "audio": 0}
        self.error: str | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self._tasks: list[asyncio.Task] = []
        self._container = None
        self._streams: dict[str, av.stream.Stream] = {}
        self._started: float | None = None
        self._audio_pts = 0
        self.started_at = time.time()
        self.duration_s = 0.0

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for kind, source in self.sources.items():
            self._tasks.append(
                asyncio.create_task(self._pump(kind, source), name=f"recorder {kind}")
            )

    async def _pump(self, kind: str, source: FrameSource) -> None:
        loop = asyncio.get_running_loop()
        seen = source.seq
        while self.error is None and self.limit is None:
            got = await source.next_frame(seen)
            if got is None:
                return
            seen, frame = got
            try:
                await loop.run_in_executor(self._executor, self._write, kind, frame)
            except Exception as exc:  # a broken encoder ends the recording, not the call
                self.error = f"{type(exc).__name__}: {exc}"
                logger.warning("recording %s failed: %s", self.path.name, self.error)
        if self.limit is not None and self.on_limit is not None:
            on_limit, self.on_limit = self.on_limit, None  # once, whichever pump saw it
            logger.info("recording %s stopped at its %s cap", self.path.name, self.limit)
            on_limit(self.limit)

    # --- in the recorder's thread ------------------------------------------------------------

    def _open(self, first_video: VideoFrame | None) -> None:
        container = av.open(str(self.path), mode="w", format="webm")
        if "video" in self.sources:
            video = container.add_stream("libvpx", rate=30, options=VIDEO_OPTIONS)
            video.width = first_video.width if first_video else 640
            video.height = first_video.height if first_video else 480
            video.pix_fmt = "yuv420p"
            video.codec_context.time_base = VIDEO_TIME_BASE
            self._streams["video"] = video
        if "audio" in self.sources:
            audio = container.add_stream("libopus", rate=48000)
            audio.layout = "stereo"
            self._streams["audio"] = audio
        self._container = container
        self._started = time.monotonic()

    def _write(self, kind: str, frame) -> None:
        if self.limit is not None:
            return
        if self._container is None:
            if "video" in self.sources and kind != "video":
                return  # the video's size is needed before the first packet is muxed
            self._open(frame if kind == "video" else None)
        stream = self._streams.get(kind)
        if stream is None:
            return
        if time.monotonic() - self._started >= self.max_seconds:
            self.limit = "duration"
            return
        if kind == "video":
            copy = VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
            if (copy.width, copy.height) != (stream.width, stream.height):
                copy = copy.reformat(width=stream.width, height=stream.height)
            copy.pts = int((time.monotonic() - self._started) * 1000)
            copy.time_base = VIDEO_TIME_BASE
        else:
            copy = AudioFrame.from_ndarray(
                frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name
            )
            copy.sample_rate = frame.sample_rate
            copy.pts = self._audio_pts
            copy.time_base = fractions.Fraction(1, frame.sample_rate)
            self._audio_pts += frame.samples
        for packet in stream.encode(copy):
            self.bytes_written += packet.size
            self._container.mux(packet)
        self.frames[kind] += 1
        if self.bytes_written >= self.max_bytes:
            self.limit = "size"  # the encoders' flush and the cues still follow: a little more

    def _finish(self) -> None:
        if self._container is None:
            return
        with contextlib.suppress(Exception):  # flush what the encoders still hold
            for stream in self._streams.values():
                for packet in stream.encode(None):
                    self._container.mux(packet)
        self._container.close()
        self.duration_s = time.monotonic() - (self._started or time.monotonic())

    # --- back on the loop -----------------------------------------------------------------------

    async def stop(self) -> int:
        """Stop, finish the file; returns its size in bytes (0 if nothing was written)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._finish)
        except Exception as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"
        await loop.run_in_executor(None, self._executor.shutdown)
        return self.path.stat().st_size if self.path.exists() else 0


# --- the Recording rows (admin lists them) ------------------------------------------------------


class ActiveRecording:
    """A ``SessionRecorder`` and its ``Recording`` row."""

    def __init__(self, row, recorder: SessionRecorder) -> None:
        self.row = row
        self.recorder = recorder


async def begin_recording(
    sources: dict[str, FrameSource],
    room_slug: str,
    room_kind: str,
    user_id: str,
    name: str,
    on_limit: Callable[[str], None] | None = None,
) -> ActiveRecording:
    """Create the row and start writing ``RECORDINGS_ROOT/<random>.webm``.

    The name is random (nothing in it comes from the room, the time or the person), so
    knowing who recorded when does not give the file away.
    """
    from channels.db import database_sync_to_async
    from django.conf import settings

    from signaling.models import Recording, recordings_storage

    file_name = f"{secrets.token_urlsafe(24)}.webm"
    row = await database_sync_to_async(Recording.objects.create)(
        room_slug=room_slug,
        room_kind=room_kind,
        participant=name[:40],
        user_id=user_id[:16],
        file=file_name,
    )
    recorder = SessionRecorder(
        sources,
        Path(recordings_storage().path(file_name)),
        max_bytes=settings.RECORDING_MAX_BYTES,
        max_seconds=settings.RECORDING_MAX_SECONDS,
        on_limit=on_limit,
    )
    recorder.start()
    return ActiveRecording(row, recorder)


async def finish_recording(active: ActiveRecording) -> None:
    """Stop writing and record the outcome in the row."""
    from channels.db import database_sync_to_async
    from django.utils import timezone

    from signaling.models import Recording

    size = await active.recorder.stop()
    row, recorder = active.row, active.recorder
    row.ended_at = timezone.now()
    row.size_bytes = size
    row.duration_s = round(recorder.duration_s, 2)
    row.video_frames = recorder.frames["video"]
    row.audio_frames = recorder.frames["audio"]
    row.error = (recorder.error or "")[:200]
    row.status = Recording.Status.FAILED if recorder.error or not size else Recording.Status.DONE
    await database_sync_to_async(row.save)()
