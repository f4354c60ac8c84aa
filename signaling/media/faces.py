"""Face boxes drawn into an echo room's returned video.

Detection (``faces.detector``) never runs on the event loop: it goes to a small
process-wide thread pool (OpenCV releases the GIL), at most one job per session at a
time and at most ``detect_fps`` per second. A job reads the session's *newest* Y plane
when it starts, not the one current when it was submitted, so a busy pool makes
detection less frequent, never late. Every frame in between gets the last boxes, so the
video keeps the camera's frame rate whatever detection costs.

Most jobs *track* rather than scan: while there are boxes, a job looks only around them
(``FaceDetector.detect_near``, ~3 ms for a 640x480 frame) and a full scan of the frame
(~37 ms) runs at most every ``full_interval`` seconds (``SERVER_ROOM_FULL_SCAN_INTERVAL``),
to find faces that came into view. A tracking job that finds fewer faces than it followed
scans the whole frame at once, so a face that moved fast is found again in the same job
and its box does not blink. With no face in view only the full scans run. Measured with
``bench server_rooms``: see docs/decisions.md.

Boxes are drawn straight into the YUV 4:2:0 planes (the decoder's output and the
encoder's input): no colour conversion per frame. The colour is ``BOX_BGR`` converted
with the BT.601 limited-range matrix that VP8/H.264 decoders assume, so the browser
shows the same pure green the other features draw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import numpy as np
from av import VideoFrame

from faces.detector import BOX_BGR, BOX_THICKNESS, Box, draw_boxes, get_detector

logger = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def detection_pool() -> Executor:
    """The bounded pool every echo session's detection shares (``SERVER_ROOM_FACE_WORKERS``).

    Bounded on purpose: N sessions with boxes cost at most ``workers`` cores of
    detection; beyond that each session detects less often instead of stealing the CPU
    that signaling and the codecs need.
    """
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                from django.conf import settings

                _pool = ThreadPoolExecutor(
                    max_workers=settings.SERVER_ROOM_FACE_WORKERS, thread_name_prefix="face-detect"
                )
    return _pool


def bgr_to_yuv601(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """BT.601 limited-range Y, U, V of a BGR colour (what the video codecs assume)."""
    b, g, r = (c / 255 for c in bgr)
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return tuple(round(min(255, max(0, c))) for c in (y, u, v))  # type: ignore[return-value]


BOX_YUV = bgr_to_yuv601(BOX_BGR)


def draw_boxes_i420(planes: np.ndarray, width: int, height: int, boxes: Sequence[Box]) -> None:
    """Draw ``boxes`` into a ``(height*3/2, width)`` I420 array (PyAV's yuv420p layout)."""
    import cv2

    y_plane = planes[:height]
    quarter = height // 4
    u_plane = planes[height : height + quarter].reshape(height // 2, width // 2)
    v_plane = planes[height + quarter : height + 2 * quarter].reshape(height // 2, width // 2)
    y_val, u_val, v_val = BOX_YUV
    half = max(1, BOX_THICKNESS // 2)
    for box in boxes:
        x0, y0, x1, y1 = box.x, box.y, box.x + box.w, box.y + box.h
        cv2.rectangle(y_plane, (x0, y0), (x1, y1), y_val, BOX_THICKNESS)
        for plane, value in ((u_plane, u_val), (v_plane, v_val)):
            cv2.rectangle(plane, (x0 // 2, y0 // 2), (x1 // 2, y1 // 2), value, half)


class FaceOverlay:
    """A frame filter for the echo's video: boxes from the newest finished detection."""

    def __init__(
        self,
        pool: Executor | None = None,
        detect_fps: float | None = None,
        full_interval: float | None = None,
    ) -> None:
        from django.conf import settings

        self.pool = pool or detection_pool()
        fps = detect_fps if detect_fps is not None else settings.SERVER_ROOM_DETECT_FPS
        self.min_interval = 1.0 / fps if fps > 0 else 0.0
        self.full_interval = (
            full_interval if full_interval is not None else settings.SERVER_ROOM_FULL_SCAN_INTERVAL
        )
        self.enabled = False
        self.boxes: list[Box] = []
        self.detect_ms: float | None = None  # duration of the newest detection
        self.scan_ms: float | None = None  # duration of the newest full-frame scan
        self.detections = 0
        self.scans = 0  # full-frame scans among the detections (the rest tracked)
        self._last_scan = float("-inf")  # monotonic start of the newest full scan (pool thread)
        self.errors = 0
        self._latest_gray: np.ndarray | None = None
        self._busy = False
        self._last_start = 0.0
        self._closed = False

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            self.boxes = []
            self._last_scan = float("-inf")  # switched on again: scan at once

    def __call__(self, frame: VideoFrame) -> VideoFrame:
        if not self.enabled or self._closed:
            return frame
        width, height = frame.width, frame.height
        if width % 2 or height % 2:
            return self._filter_bgr(frame)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        planes = frame.to_ndarray()  # our own copy: safe to hand to a pool thread
        self._latest_gray = planes[:height]
        self._maybe_detect()
        if not self.boxes:
            return frame
        draw_boxes_i420(planes, width, height, self.boxes)
        return _like(VideoFrame.from_ndarray(planes, format="yuv420p"), frame)

    def _filter_bgr(self, frame: VideoFrame) -> VideoFrame:
        """Odd-sized frames have no clean 4:2:0 layout: convert, like any BGR image."""
        image = frame.to_ndarray(format="bgr24")
        self._latest_gray = image
        self._maybe_detect()
        if not self.boxes:
            return frame
        return _like(VideoFrame.from_ndarray(draw_boxes(image, self.boxes), format="bgr24"), frame)

    def _maybe_detect(self) -> None:
        now = time.monotonic()
        if self._busy or now - self._last_start < self.min_interval:
            return  # one job at a time per session: drop, never queue
        self._busy = True
        self._last_start = now
        future = self.pool.submit(self._detect)
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda f: _call_soon(loop, self._done, f))

    def _detect(self) -> tuple[list[Box], float, float | None]:
        """In a pool thread: detect on the newest image at the time the job *starts*.

        Returns the boxes, the job's duration and, if it scanned the whole frame, the
        scan's duration (ms). Tracks the current boxes unless a full scan is due.
        """
        image = self._latest_gray
        if image is None or self._closed:
            return [], 0.0, None
        detector = get_detector()
        previous = self.boxes
        started = time.perf_counter()
        if previous and started - self._last_scan < self.full_interval:
            boxes = detector.detect_near(image, previous)
            if len(boxes) >= len(previous):
                return boxes, (time.perf_counter() - started) * 1000, None
        self._last_scan = started
        scan_start = time.perf_counter()
        boxes = detector.detect(image)
        done = time.perf_counter()
        return boxes, (done - started) * 1000, (done - scan_start) * 1000

    def _done(self, future: Future) -> None:
        self._busy = False
        if self._closed or future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self.errors += 1
            logger.warning("face detection failed: %s", exc)
            return
        boxes, ms, scan_ms = future.result()
        if self.enabled:
            self.boxes = boxes
            self.detect_ms = ms
            self.detections += 1
            if scan_ms is not None:
                self.scan_ms = scan_ms
                self.scans += 1

    def close(self) -> None:
        self._closed = True
        self._latest_gray = None
        self.boxes = []


def _call_soon(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
    """From a pool thread; the loop may be gone already (server shutting down)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _like(new: VideoFrame, old: VideoFrame) -> VideoFrame:
    new.pts = old.pts
    new.time_base = old.time_base
    return new
