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
* **Detection on the latest frame, in its own thread**: every frame is drawn with the most
  recent boxes, so the video keeps its frame rate even when detection is slower than the
  frame rate (the boxes then lag by a frame or two instead of the stream falling behind).
* **Audio bypasses Python**: FFmpeg #1 writes PCM to a pipe FFmpeg #2 reads; both raw
  inputs start at time 0, kept continuous by ``fps`` (video) and ``aresample=async``
  (audio), so they stay in step. The audio pipe is enlarged so audio running ahead of the
  video (which waits for Python) never blocks FFmpeg #1.
* **One process-like object** (``OverlayProcess``): the pipeline writes its stdin, reads one
  merged stderr, waits for it and kills it exactly as it does a single FFmpeg.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streaming.ffmpeg import RawInput

logger = logging.getLogger(__name__)

AUDIO_PIPE_BYTES = 1 << 20  # ~5 s of 48 kHz stereo PCM (Linux's default pipe-max-size)
SAMPLE_RATE = 48000
CHANNELS = 2
#: Box colour in YUV (BT.601, limited range) for pure green, the site's BOX_BGR.
BOX_YUV = (145, 54, 34)
BOX_THICKNESS = 4  # luma pixels (even: chroma is drawn at half resolution)
#: Boxes stay this long after a detection that found nothing: the cascade misses a face in
#: an odd frame (compression noise), and boxes blinking off for a few frames look broken.
HOLD_SECONDS = 0.5


@dataclass
class OverlayPlan:
    """What FFmpeg #2 will read (``raw``, for ``build_command``) and the audio pipe's write
    end for FFmpeg #1; ``start`` spawns the chain and closes our copies of the pipe ends."""

    raw: RawInput
    audio_write_fd: int | None = None

    @classmethod
    def for_source(cls, width: int, height: int, fps: int, has_audio: bool) -> OverlayPlan:
        width, height = width - width % 2, height - height % 2  # yuv420p needs even sizes
        audio_read = audio_write = None
        if has_audio:
            audio_read, audio_write = os.pipe()
            with contextlib.suppress(OSError):  # keep the default size if the limit is lower
                fcntl.fcntl(audio_write, fcntl.F_SETPIPE_SZ, AUDIO_PIPE_BYTES)
        raw = RawInput(width, height, fps, "yuv420p", audio_read, SAMPLE_RATE, CHANNELS)
        return cls(raw, audio_write)

    async def start(
        self, binary: str, encoder_cmd: list[str], detect: Callable | None = None
    ) -> OverlayProcess:
        """Start FFmpeg #1, the drawing threads and FFmpeg #2 (``encoder_cmd``)."""
        if detect is None:
            from faces.detector import get_detector

            detect = get_detector().detect
        process = OverlayProcess(self.raw, detect)
        await process.start(
            decoder_command(binary, self.raw, self.audio_write_fd), encoder_cmd, self.audio_write_fd
        )
        return process

    async def spawn(self, *encoder_cmd: str, **_pipes: Any) -> OverlayProcess:
        """A stand-in for ``asyncio.create_subprocess_exec(*encoder_cmd, **pipes)``: the
        pipeline's pipe arguments are for a single FFmpeg; the chain sets up its own. FFmpeg
        #1 is the same binary as #2."""
        return await self.start(encoder_cmd[0], list(encoder_cmd))


def decoder_command(binary: str, raw: RawInput, audio_write_fd: int | None) -> list[str]:
    """FFmpeg #1: the publisher's WebM on stdin → raw frames on stdout (+ PCM on a pipe)."""
    cmd = [
        *(binary, "-hide_banner", "-nostats", "-nostdin", "-loglevel", "warning"),
        *("-max_error_rate", "1"),
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


# --- drawing -------------------------------------------------------------------------------
def draw_boxes_yuv420(frame: np.ndarray, width: int, height: int, boxes) -> None:
    """Draw box outlines into a flat yuv420p frame (in place), in the site's box colour."""
    import cv2

    y = frame[: width * height].reshape(height, width)
    chroma = (width // 2) * (height // 2)
    u = frame[width * height : width * height + chroma].reshape(height // 2, width // 2)
    v = frame[width * height + chroma :].reshape(height // 2, width // 2)
    for box in boxes:
        x0, y0 = box.x & ~1, box.y & ~1
        x1, y1 = min(width - 2, (box.x + box.w) & ~1), min(height - 2, (box.y + box.h) & ~1)
        # Inner-aligned rectangles (thickness grows inwards), so chroma covers the same pixels.
        for plane, value, scale in ((y, BOX_YUV[0], 1), (u, BOX_YUV[1], 2), (v, BOX_YUV[2], 2)):
            t = BOX_THICKNESS // scale
            a, b = (x0 // scale, y0 // scale), (x1 // scale, y1 // scale)
            cv2.rectangle(plane, a, (b[0], a[1] + t - 1), value, -1)
            cv2.rectangle(plane, (a[0], b[1] - t + 1), b, value, -1)
            cv2.rectangle(plane, a, (a[0] + t - 1, b[1]), value, -1)
            cv2.rectangle(plane, (b[0] - t + 1, a[1]), b, value, -1)


@dataclass
class OverlayStats:
    frames: int = 0
    detections: int = 0
    detect_ms_total: float = 0.0
    faces_last: int = 0
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        mean = self.detect_ms_total / self.detections if self.detections else None
        return {
            "frames": self.frames,
            "detections": self.detections,
            "detect_ms_mean": round(mean, 2) if mean is not None else None,
            "faces": self.faces_last,
            "error": self.error,
        }


@dataclass
class _Latest:
    """The newest frame's Y plane for the detector thread, and the newest boxes back."""

    lock: threading.Condition = field(default_factory=threading.Condition)
    gray: np.ndarray | None = None
    boxes: list = field(default_factory=list)
    done: bool = False


def _read_exact(fd: int, buffer: bytearray) -> bool:
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
    """FFmpeg #1 + the drawing threads + FFmpeg #2, looking like one asyncio subprocess."""

    def __init__(self, raw: RawInput, detect: Callable[[np.ndarray], list]) -> None:
        self.raw = raw
        self.detect = detect
        self.decoder: asyncio.subprocess.Process | None = None
        self.encoder: asyncio.subprocess.Process | None = None
        self.stdin: asyncio.StreamWriter | None = None
        self.stderr: asyncio.StreamReader | None = None
        self.returncode: int | None = None
        self.stats = OverlayStats()
        self._latest = _Latest()
        self._threads: list[threading.Thread] = []

    @property
    def pid(self) -> int:
        assert self.decoder is not None
        return self.decoder.pid  # killing it ends the chain (see ``wait``)

    async def start(
        self, decoder_cmd: list[str], encoder_cmd: list[str], audio_write: int | None
    ) -> None:
        audio_read = self.raw.audio_fd
        frames_read, frames_write = os.pipe()  # FFmpeg #1 → Python
        draw_read, draw_write = os.pipe()  # Python → FFmpeg #2
        err_read, err_write = os.pipe()  # both FFmpegs' stderr, merged
        own = [frames_write, draw_read, err_write]
        try:
            self.decoder = await asyncio.create_subprocess_exec(
                *decoder_cmd,
                stdin=asyncio.subprocess.PIPE,
                stdout=frames_write,
                stderr=err_write,
                pass_fds=(audio_write,) if audio_write is not None else (),
                start_new_session=True,
            )
            self.encoder = await asyncio.create_subprocess_exec(
                *encoder_cmd,
                stdin=draw_read,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err_write,
                pass_fds=(audio_read,) if audio_read is not None else (),
                start_new_session=True,
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
            threading.Thread(target=self._detector, name="overlay-detect", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # --- threads ------------------------------------------------------------------------
    def _pump(self, frames_fd: int, draw_fd: int) -> None:
        """Read each raw frame, hand its Y plane to the detector, draw the latest boxes, write."""
        raw, latest = self.raw, self._latest
        size = raw.width * raw.height * 3 // 2
        buffer = bytearray(size)
        frame = np.frombuffer(buffer, dtype=np.uint8)
        luma = frame[: raw.width * raw.height].reshape(raw.height, raw.width)
        try:
            while _read_exact(frames_fd, buffer):
                with latest.lock:
                    if latest.gray is None:  # the detector is idle: give it this frame
                        latest.gray = luma.copy()
                        latest.lock.notify()
                    boxes = latest.boxes
                draw_boxes_yuv420(frame, raw.width, raw.height, boxes)
                _write_all(draw_fd, memoryview(buffer))
                self.stats.frames += 1
        except (BrokenPipeError, OSError) as exc:
            self.stats.error = f"overlay stopped: {exc}"
            logger.warning("face overlay: %s", self.stats.error)
            # FFmpeg #2 is gone: stop FFmpeg #1 too, or it blocks on a full pipe forever.
            if self.decoder is not None and self.decoder.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.decoder.pid, signal.SIGKILL)
        finally:
            os.close(frames_fd)
            os.close(draw_fd)  # EOF: FFmpeg #2 finishes its segments and playlists
            with latest.lock:
                latest.done = True
                latest.lock.notify()

    def _detector(self) -> None:
        latest = self._latest
        seen_at = 0.0  # when boxes were last found
        while True:
            with latest.lock:
                while latest.gray is None and not latest.done:
                    latest.lock.wait()
                if latest.done:
                    return
                gray = latest.gray
            started = time.perf_counter()
            try:
                boxes = self.detect(gray)
            except Exception as exc:  # keep the video flowing without boxes
                logger.exception("face overlay: detection failed")
                self.stats.error = f"detection failed: {exc}"
                boxes = []
            self.stats.detections += 1
            self.stats.detect_ms_total += (time.perf_counter() - started) * 1000
            self.stats.faces_last = len(boxes)
            now = time.monotonic()
            with latest.lock:
                if boxes:
                    seen_at = now
                    latest.boxes = boxes
                elif now - seen_at > HOLD_SECONDS:
                    latest.boxes = []
                latest.gray = None  # ready for the next frame

    # --- process interface -----------------------------------------------------------------
    async def wait(self) -> int:
        assert self.decoder is not None and self.encoder is not None
        decoded = await self.decoder.wait()
        if decoded < 0 and self.encoder.returncode is None:  # killed: kill the whole chain
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.encoder.pid, signal.SIGKILL)
        for thread in self._threads:
            await asyncio.to_thread(thread.join)
        encoded = await self.encoder.wait()
        self.returncode = decoded if decoded != 0 else encoded
        logger.info("face overlay finished: %s", self.stats.as_dict())
        return self.returncode
