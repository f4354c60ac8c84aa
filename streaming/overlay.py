"""Server-side face boxes drawn into a live stream (a stream's ``face_overlay`` option).

The normal pipeline is one FFmpeg: WebM on stdin → HLS/DASH. With the overlay it becomes a
chain, started by ``start`` in place of that process::

    WebM → FFmpeg #1 (decode) ─ raw yuv420p frames ─→ Python (draw boxes) ─→ FFmpeg #2 ─→ HLS/DASH
                              └─ PCM audio (an OS pipe, straight to #2) ──────────────┘

FFmpeg #2 is the usual encoder command (``streaming.ffmpeg.build_command``) with a
``RawInput``. Why this shape:

* **yuv420p, not BGR**: the detector takes the Y plane as its grayscale image and boxes are
  drawn into the three planes directly — no colour conversion in Python or in either FFmpeg,
  and 1.5 bytes per pixel through the pipes instead of 3.
* **Boxes from ``faces/boxes.py``**, like the echo room's: the same drawing and colour, and
  a ``FaceTracker`` in the process's one detection pool — tracking around the last boxes
  between full scans, one job at a time on the newest frame, at most one per frame. Every
  frame is drawn with the latest boxes, so the video keeps its frame rate even when
  detection is slower (the boxes then lag by a frame or two instead of the stream falling
  behind).
* **Audio bypasses Python**: FFmpeg #1 writes PCM to a pipe FFmpeg #2 reads; both raw
  inputs start at time 0, kept continuous by ``fps`` (video) and ``aresample=async``
  (audio), so they stay in step. The audio pipe is enlarged so audio running ahead of the
  video (which waits for Python) never blocks FFmpeg #1.
* **One process-like object** (``OverlayProcess``): the pipeline writes its stdin, reads one
  merged stderr, waits for it and kills it exactly as it does a single FFmpeg.
* **Sizes from a checked header only**: the pipeline runs ``webm.check_source`` first (at
  least 16 pixels a side, bounded area), so no buffer here is sized from an unchecked
  header; odd sizes are rounded down to even here.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from faces.boxes import FaceTracker, draw_boxes_i420
from streaming.ffmpeg import ChildLimits, RawInput, spawn

logger = logging.getLogger(__name__)

AUDIO_PIPE_BYTES = 1 << 20  # ~5 s of 48 kHz stereo PCM (Linux's default pipe-max-size)
SAMPLE_RATE = 48000
CHANNELS = 2
# The drawing thread ends once both FFmpegs have exited (EOF or a broken pipe); waiting for
# it longer than this means a bug, not a slow machine: log it and let the stream close.
THREAD_JOIN_TIMEOUT = 5.0


@dataclass
class OverlayPlan:
    """What FFmpeg #2 will read (``raw``, for ``build_command``) and the audio pipe's write
    end for FFmpeg #1; ``start`` spawns the chain and closes our copies of the pipe ends."""

    raw: RawInput
    audio_write_fd: int | None = None
    limits: ChildLimits | None = None  # for both FFmpegs (None: the settings)
    low_delay: bool = False  # FFmpeg #1 decodes without frame threads (low-latency streams)

    @classmethod
    def for_source(
        cls,
        width: int,
        height: int,
        fps: int,
        has_audio: bool,
        limits: ChildLimits | None = None,
        *,
        low_delay: bool = False,
    ) -> OverlayPlan:
        width, height = width - width % 2, height - height % 2  # yuv420p needs even sizes
        if width < 2 or height < 2:  # check_source keeps such headers out; never size 0
            raise ValueError(f"frame size {width}x{height} is too small for the overlay")
        audio_read = audio_write = None
        if has_audio:
            audio_read, audio_write = os.pipe()
            with contextlib.suppress(OSError):  # keep the default size if the limit is lower
                fcntl.fcntl(audio_write, fcntl.F_SETPIPE_SZ, AUDIO_PIPE_BYTES)
        raw = RawInput(width, height, fps, "yuv420p", audio_read, SAMPLE_RATE, CHANNELS)
        return cls(raw, audio_write, limits, low_delay)

    async def start(
        self,
        binary: str,
        encoder_cmd: list[str],
        tracker: FaceTracker | None = None,
        *,
        extra_fds: tuple[int, ...] = (),
    ) -> OverlayProcess:
        """Start FFmpeg #1, the drawing thread and FFmpeg #2 (``encoder_cmd``, inheriting
        ``extra_fds`` too: the WebRTC output's pipe)."""
        process = OverlayProcess(self.raw, tracker or FaceTracker(detect_fps=0), self.limits)
        await process.start(
            decoder_command(binary, self.raw, self.audio_write_fd, low_delay=self.low_delay),
            encoder_cmd,
            self.audio_write_fd,
            extra_fds=extra_fds,
        )
        return process


def decoder_command(
    binary: str, raw: RawInput, audio_write_fd: int | None, *, low_delay: bool = False
) -> list[str]:
    """FFmpeg #1: the publisher's WebM on stdin → raw frames on stdout (+ PCM on a pipe).

    ``low_delay``: no frame-threaded decoding (it holds frames back: ``build_command``)."""
    cmd = [
        *(binary, "-hide_banner", "-nostats", "-nostdin", "-loglevel", "warning"),
        *("-max_error_rate", "1"),
        *(("-flags", "low_delay") if low_delay else ()),
        *("-f", "webm", "-probesize", "32", "-analyzeduration", "0", "-i", "pipe:0"),
        *("-map", "0:v:0", "-vf", f"fps={raw.fps},scale={raw.width}:{raw.height}"),
        *("-pix_fmt", raw.pix_fmt, "-f", "rawvideo", "pipe:1"),
    ]
    if audio_write_fd is not None:
        cmd += [
            *("-map", "0:a:0", "-af", "aresample=async=1"),
            *("-ar", str(raw.sample_rate), "-ac", str(raw.channels)),
            *("-f", "s16le", f"pipe:{audio_write_fd}"),
        ]
    return cmd


@dataclass
class OverlayStats:
    tracker: FaceTracker
    frames: int = 0
    faces: int = 0  # in the newest frame drawn
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        tracker = self.tracker
        detections = tracker.detections
        mean = tracker.detect_ms_total / detections if detections else None
        return {
            "frames": self.frames,
            "detections": detections,
            "scans": tracker.scans,
            "detect_ms_mean": round(mean, 2) if mean is not None else None,
            "faces": self.faces,
            "detection_errors": tracker.errors,
            "error": self.error,
        }


def _read_exact(fd: int, buffer: bytearray) -> bool:
    """Fill ``buffer`` from ``fd``; False at EOF. An empty buffer is an error, not a
    frame: reading 0 bytes always "succeeds", and the caller would loop forever."""
    if not buffer:
        raise ValueError("a frame buffer of 0 bytes")
    view = memoryview(buffer)
    got = 0
    while got < len(buffer):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            return False
        got += n
    return True


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


class OverlayProcess:
    """FFmpeg #1 + the drawing thread + FFmpeg #2, looking like one asyncio subprocess."""

    def __init__(
        self, raw: RawInput, tracker: FaceTracker, limits: ChildLimits | None = None
    ) -> None:
        self.raw = raw
        self.tracker = tracker
        self.limits = limits
        self.decoder: asyncio.subprocess.Process | None = None
        self.encoder: asyncio.subprocess.Process | None = None
        self.stdin: asyncio.StreamWriter | None = None
        self.stderr: asyncio.StreamReader | None = None
        self.returncode: int | None = None
        self.stats = OverlayStats(tracker)
        self._threads: list[threading.Thread] = []
        self._decoder_stopped = False  # killed by the drawing thread: FFmpeg #2 went first

    @property
    def pid(self) -> int:
        assert self.decoder is not None
        return self.decoder.pid  # killing it ends the chain (see ``wait``)

    async def start(
        self,
        decoder_cmd: list[str],
        encoder_cmd: list[str],
        audio_write: int | None,
        *,
        extra_fds: tuple[int, ...] = (),
    ) -> None:
        audio_read = self.raw.audio_fd
        frames_read, frames_write = os.pipe()  # FFmpeg #1 → Python
        draw_read, draw_write = os.pipe()  # Python → FFmpeg #2
        err_read, err_write = os.pipe()  # both FFmpegs' stderr, merged
        own = [frames_write, draw_read, err_write]
        try:
            self.decoder = await spawn(
                decoder_cmd,
                self.limits,
                stdin=asyncio.subprocess.PIPE,
                stdout=frames_write,
                stderr=err_write,
                pass_fds=(audio_write,) if audio_write is not None else (),
            )
            self.encoder = await spawn(
                encoder_cmd,
                self.limits,
                stdin=draw_read,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err_write,
                pass_fds=(*extra_fds, *((audio_read,) if audio_read is not None else ())),
            )
        except BaseException:
            for fd in (frames_read, draw_write, err_read):
                os.close(fd)
            if self.decoder is not None and self.decoder.returncode is None:
                self.decoder.kill()
                await self.decoder.wait()
            raise
        finally:
            # The children hold their ends now; ours must go, or no EOF ever reaches anyone.
            for fd in own + [fd for fd in (audio_read, audio_write) if fd is not None]:
                os.close(fd)
        self.stdin = self.decoder.stdin
        loop = asyncio.get_running_loop()
        self.stderr = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(self.stderr), os.fdopen(err_read, "rb", 0)
        )
        self._threads = [
            threading.Thread(
                target=self._pump, args=(frames_read, draw_write), name="overlay-pump", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    # --- thread ---------------------------------------------------------------------------
    def _pump(self, frames_fd: int, draw_fd: int) -> None:
        """Read each raw frame, offer its Y plane to the tracker, draw the latest boxes, write."""
        raw, tracker = self.raw, self.tracker
        size = raw.width * raw.height * 3 // 2
        buffer = bytearray(size)
        frame = np.frombuffer(buffer, dtype=np.uint8)
        luma = frame[: raw.width * raw.height].reshape(raw.height, raw.width)
        try:
            while _read_exact(frames_fd, buffer):
                tracker.offer(luma.copy())  # the buffer is reused and drawn into
                boxes = tracker.boxes
                draw_boxes_i420(frame, raw.width, raw.height, boxes)
                _write_all(draw_fd, memoryview(buffer))
                self.stats.frames += 1
                self.stats.faces = len(boxes)
        except (OSError, ValueError) as exc:  # BrokenPipeError is an OSError
            self.stats.error = f"overlay stopped: {exc}"
            logger.warning("face overlay: %s", self.stats.error)
            # FFmpeg #2 is gone: stop FFmpeg #1 too, or it blocks on a full pipe forever.
            if self.decoder is not None and self.decoder.returncode is None:
                self._decoder_stopped = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.decoder.pid, signal.SIGKILL)
        finally:
            tracker.close()
            os.close(frames_fd)
            os.close(draw_fd)  # EOF: FFmpeg #2 finishes its segments and playlists

    # --- process interface -----------------------------------------------------------------
    def kill(self) -> None:
        """Kill both FFmpegs (the drawing thread then ends on EOF or a broken pipe)."""
        for proc in (self.decoder, self.encoder):
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    async def wait(self) -> int:
        """Wait for (reap) both FFmpegs, then the drawing thread (bounded, see
        ``THREAD_JOIN_TIMEOUT``)."""
        assert self.decoder is not None and self.encoder is not None
        decoded = await self.decoder.wait()
        if decoded < 0 and self.encoder.returncode is None:  # killed: kill the whole chain
            with contextlib.suppress(ProcessLookupError):
                self.encoder.kill()
        encoded = await self.encoder.wait()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, THREAD_JOIN_TIMEOUT)
            if thread.is_alive():
                logger.error("face overlay: %s still running after both FFmpegs", thread.name)
        # The code of the FFmpeg that ended the chain (the pipeline restarts after a kill,
        # not after a crash): FFmpeg #1's, unless the drawing thread stopped it.
        first = encoded if self._decoder_stopped and encoded != 0 else decoded
        self.returncode = first if first != 0 else encoded
        logger.info("face overlay finished: %s", self.stats.as_dict())
        return self.returncode
