"""A WebRTC publisher's decoded frames → the encoder's raw inputs (the I/O around rawpace).

``RawFeed`` is what ``StreamPipeline.start_raw`` feeds instead of WebM chunks. Frames come
from aiortc's receivers (always decoded: aiortc has no encoded-frame API). Each video frame
is converted once, on arrival, to ``yuv420p`` at the stream's fixed size (a sender that
changes resolution mid-stream is scaled back to the first one: the ladder was chosen from
it) and kept as the newest; the schedule of ``rawpace.VideoSlots`` writes it to FFmpeg's
stdin through the pipeline's bounded queue. Audio is resampled to 48 kHz stereo PCM and
written to FFmpeg's audio pipe at once, one NUT packet per frame (FFmpeg's bare PCM input
would hand it on in ~85 ms bursts: ``streaming.ffmpeg.RawInput``), kept in step by
``rawpace.AudioLevel``.
With the face overlay the boxes are drawn into the frame here (the tracker runs detection
in the process's pool, as the chunk-ingest overlay does).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from faces.boxes import FaceTracker, draw_boxes_i420
from streaming.rawpace import AudioLevel, VideoSlots
from streaming.webm import StreamInfo, Track

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
CHANNELS = 2
#: PCM waiting in our write buffer beyond the pipe's own (1 MiB, ~5 s): more means FFmpeg
#: is not reading its audio; newer audio is dropped instead of growing memory
AUDIO_BUFFER_BYTES = 256 * 1024
#: Matroska codec IDs of what a WebRTC sender may send, for the checks chunks get too
_CODEC_IDS = {"H264": "V_MPEG4/ISO/AVC", "VP8": "V_VP8", "VP9": "V_VP9", "AV1": "V_AV1"}
_PCM_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


class _PipeFile:
    """What PyAV's NUT muxer writes to: the audio pipe's non-blocking transport."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport

    def write(self, data: bytes) -> int:
        if not self.transport.is_closing():
            self.transport.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


@dataclass(frozen=True)
class RawSource:
    """What a WebRTC publisher sends, as known from its first video frame and its offer."""

    width: int
    height: int
    has_audio: bool
    codec: str = "H264"  # the sender's video codec (its frames arrive decoded)

    @property
    def info(self) -> StreamInfo:
        """As a WebM header would describe it: the source checks (frame size) and the
        ladder see one kind of source."""
        video = Track(
            1, "video", _CODEC_IDS.get(self.codec.upper(), self.codec), self.width, self.height
        )
        audio = (Track(2, "audio", "A_OPUS", sample_rate=SAMPLE_RATE, channels=CHANNELS),)
        return StreamInfo("webrtc", (video, *(audio if self.has_audio else ())))


@dataclass
class RawCounters:
    video_in: int = 0  # frames received
    video_resized: int = 0  # frames not at the stream's size (scaled to it)
    audio_in: int = 0
    audio_buffer_drops: int = 0  # PCM dropped: FFmpeg not reading its audio pipe


class RawFeed:
    """The newest video frame and the audio of one publisher, written on schedule.

    ``enqueue(data) -> bool`` puts one raw frame in the pipeline's queue (False: full).
    ``attach`` starts each encoder run (media time 0 = now); ``detach`` ends its input.
    """

    def __init__(
        self,
        width: int,
        height: int,
        fps: int,
        enqueue: Callable[[bytes], bool],
        *,
        tracker: FaceTracker | None = None,
    ) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._enqueue = enqueue
        self.tracker = tracker
        self.counters = RawCounters()
        self.slots: VideoSlots | None = None
        self.audio = AudioLevel(SAMPLE_RATE)
        self._frame: bytes | None = None
        self._resampler: av.AudioResampler | None = None
        self._audio: asyncio.WriteTransport | None = None
        self._mux: Any = None  # PyAV's NUT muxer on the audio pipe
        self._pcm: Any = None  # its PCM stream

    # --- encoder runs ------------------------------------------------------------------
    async def attach(self, audio_fd: int | None, origin: float | None = None) -> None:
        """A new encoder run: its audio pipe's write end (``audio_fd``, ours to close) and
        a fresh schedule whose slot 0 is at ``origin`` (monotonic; default now)."""
        self.slots = VideoSlots(self.fps, time.monotonic() if origin is None else origin)
        self.audio = AudioLevel(SAMPLE_RATE)
        self._close_audio()
        if audio_fd is not None:
            loop = asyncio.get_running_loop()
            pipe = os.fdopen(audio_fd, "wb", 0)
            self._audio, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)
            self._mux = av.open(
                _PipeFile(self._audio), mode="w", format="nut", options={"write_index": "0"}
            )
            self._pcm = self._mux.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="stereo")

    def detach(self) -> None:
        """No more input for this run: the audio pipe closes (FFmpeg sees its end)."""
        self.slots = None
        self._close_audio()

    def _close_audio(self) -> None:
        if self._mux is not None:
            with contextlib.suppress(Exception):  # the trailer into a pipe FFmpeg left
                self._mux.close()
            self._mux = self._pcm = None
        if self._audio is not None:
            self._audio.close()
            self._audio = None

    # --- frames in -----------------------------------------------------------------------
    def video(self, frame: av.VideoFrame) -> None:
        """Keep ``frame`` as the newest, converted to the stream's size and format."""
        self.counters.video_in += 1
        if (frame.width, frame.height) != (self.width, self.height):
            self.counters.video_resized += 1
        image = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        planes = np.ascontiguousarray(image.to_ndarray())
        if self.tracker is not None:
            self.tracker.offer(planes[: self.height].copy())  # the Y plane, as grayscale
            draw_boxes_i420(planes, self.width, self.height, self.tracker.boxes)
        self._frame = planes.tobytes()

    def audio_frame(self, frame: av.AudioFrame) -> None:
        """Write ``frame``'s samples now, after any silence the schedule asks for."""
        self.counters.audio_in += 1
        if self._audio is None or self.slots is None:
            return  # before the first video frame: the timeline starts with the video
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
        for pcm in self._resampler.resample(frame):
            at = self.audio.written
            gap, keep = self.audio.admit(pcm.samples, self.slots.media_seconds)
            self._write_silence(at, gap)
            if keep:
                self._write_audio(pcm, at + gap)

    # --- the schedule --------------------------------------------------------------------
    def tick(self, now: float) -> float | None:
        """Write the slots due by ``now``; returns when the next one is due (None before
        the first frame or between runs)."""
        slots = self.slots
        if slots is None or self._frame is None:
            return None
        due = slots.due(now)
        for written in range(due):
            if not self._enqueue(self._frame):
                slots.undo(due - written)
                break
        if self._audio is not None:
            at = self.audio.written
            self._write_silence(at, self.audio.pad(slots.media_seconds))
        return slots.next_at()

    def _write_silence(self, at: int, samples: int) -> None:
        """``samples`` of silence from sample ``at``, in frames of at most 20 ms."""
        while samples > 0:
            size = min(samples, SAMPLE_RATE // 50)
            silence = av.AudioFrame.from_ndarray(
                np.zeros((1, size * CHANNELS), np.int16), format="s16", layout="stereo"
            )
            silence.sample_rate = SAMPLE_RATE
            self._write_audio(silence, at)
            at, samples = at + size, samples - size

    def _write_audio(self, frame: av.AudioFrame, at: int) -> None:
        """One frame of PCM as a NUT packet stamped with its place ``at`` (samples)."""
        audio = self._audio
        if audio is None or audio.is_closing() or self._pcm is None:
            return
        if audio.get_write_buffer_size() > AUDIO_BUFFER_BYTES:
            self.counters.audio_buffer_drops += 1
            return
        frame.pts, frame.time_base = at, _PCM_TIME_BASE
        try:
            for packet in self._pcm.encode(frame):
                self._mux.mux(packet)
        except (OSError, RuntimeError, av.FFmpegError):  # FFmpeg gone: its exit is handled
            pass

    def stats(self) -> dict[str, Any]:
        slots = self.slots
        return {
            "video_frames_in": self.counters.video_in,
            "video_frames_resized": self.counters.video_resized,
            "audio_frames_in": self.counters.audio_in,
            "slots_written": slots.written if slots else 0,
            "slots_deferred": slots.deferred if slots else 0,
            "audio_silence_samples": self.audio.silence,
            "audio_dropped_samples": self.audio.dropped,
            "audio_buffer_drops": self.counters.audio_buffer_drops,
        }

    def close(self) -> None:
        self.detach()
        if self.tracker is not None:
            self.tracker.close()
