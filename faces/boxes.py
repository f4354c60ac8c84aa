"""Face boxes on video: one drawing and one tracker for every feature that boxes a video.

Echo rooms (``signaling/media/faces.py``) and the live-stream overlay
(``streaming/overlay.py``) both draw boxes into decoded video and keep them current while
frames keep coming. They share this module so that a box looks the same wherever it is
seen and detection costs the same, bounded the same way.

Drawing:

* **One colour and thickness** (``BOX_BGR``, ``BOX_THICKNESS``). ``BOX_YUV`` is that colour
  under the BT.601 limited-range matrix that VP8/H.264 decoders assume, so a box drawn
  into YUV comes out of the browser's decoder as the same pure green as one drawn in BGR
  (pages and tests look for it).
* **Straight into the I420 planes** (the decoder's output and the encoder's input): no
  colour conversion per frame.
* **Outlines grow inwards from even pixels**: chroma has half the resolution, so a line
  starting on an even pixel with an even width is covered exactly by its chroma samples:
  no fringe of wrong colour along the box. BGR drawing uses the same geometry.

Tracking (``FaceTracker``), why it looks like this:

* **Detection never on the caller's thread**: jobs go to the process-wide pool
  (``faces.detector.detection_pool``), at most one per video at a time and at most
  ``detect_fps`` per second. Frames arriving meanwhile are not queued: a job reads the
  video's *newest* frame when it starts, so a busy pool makes detection less frequent,
  never late. Every frame is drawn with the latest boxes, so the video keeps its frame
  rate whatever detection costs.
* **Track, scan now and then**: while there are boxes, a job looks only around them
  (``FaceDetector.detect_near``, a fraction of a full scan's cost); a full scan runs at most
  every ``full_interval`` seconds, to find faces that came into view, and at once when
  tracking found fewer faces than it followed, so a face that moved fast is found again in
  the same job. With no face in view only full scans run.
* **Boxes held for ``HOLD_SECONDS``** after a job that found nothing: the cascade misses a
  face in an odd frame (compression noise), and boxes blinking off look broken.
* **Results are applied under a lock, per generation**: ``reset`` (boxes switched off)
  voids the result of a job still running, so boxes switched off stay off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import numpy as np

from faces.detector import Box, FaceDetector, detection_pool, get_detector

logger = logging.getLogger(__name__)

#: Box colour, BGR order (pure green: survives chroma subsampling well enough to be read
#: back from decoded pixels).
BOX_BGR: tuple[int, int, int] = (0, 255, 0)
#: Line width in (luma) pixels; even, so chroma lines are exactly half as wide.
BOX_THICKNESS = 4
#: Boxes stay this long after a detection that found nothing.
HOLD_SECONDS = 0.5


def bgr_to_yuv601(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """BT.601 limited-range Y, U, V of a BGR colour (what the video codecs assume)."""
    b, g, r = (c / 255 for c in bgr)
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return tuple(round(min(255, max(0, c))) for c in (y, u, v))  # type: ignore[return-value]


BOX_YUV = bgr_to_yuv601(BOX_BGR)


def _outline(plane: np.ndarray, x0: int, y0: int, x1: int, y1: int, width: int, value) -> None:
    """Four strips of ``width`` pixels inside the rectangle [x0, x1) x [y0, y1)."""
    plane[y0 : y0 + width, x0:x1] = value
    plane[max(y0, y1 - width) : y1, x0:x1] = value
    plane[y0:y1, x0 : x0 + width] = value
    plane[y0:y1, max(x0, x1 - width) : x1] = value


def draw_boxes(image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Draw box outlines into an H x W x 3 BGR ``image`` in place (and return it)."""
    height, width = image.shape[:2]
    for box in boxes:
        x1, y1 = min(width, box.x + box.w), min(height, box.y + box.h)
        _outline(image, box.x, box.y, x1, y1, BOX_THICKNESS, BOX_BGR)
    return image


def draw_boxes_i420(planes: np.ndarray, width: int, height: int, boxes: Sequence[Box]) -> None:
    """Draw box outlines into an I420 frame in place: PyAV's ``(height*3/2, width)`` array or
    the same bytes flat (raw ``yuv420p`` from FFmpeg). ``width`` and ``height`` are even."""
    flat = planes.reshape(-1)  # a view: both layouts are contiguous
    luma, chroma = width * height, (width // 2) * (height // 2)
    y_plane = flat[:luma].reshape(height, width)
    u_plane = flat[luma : luma + chroma].reshape(height // 2, width // 2)
    v_plane = flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2)
    y_val, u_val, v_val = BOX_YUV
    for box in boxes:
        # Even corners, the far one rounded up: chroma then covers exactly the luma lines.
        x0, y0 = box.x & ~1, box.y & ~1
        x1, y1 = min(width, (box.x + box.w + 1) & ~1), min(height, (box.y + box.h + 1) & ~1)
        _outline(y_plane, x0, y0, x1, y1, BOX_THICKNESS, y_val)
        half = (x0 // 2, y0 // 2, x1 // 2, y1 // 2, BOX_THICKNESS // 2)
        _outline(u_plane, *half, u_val)
        _outline(v_plane, *half, v_val)


class FaceTracker:
    """One video's face boxes, kept current by detection jobs in the shared pool.

    The video's thread calls ``offer`` with each frame's grayscale image (a Y plane) and
    draws ``boxes``; jobs run in pool threads. ``boxes`` is replaced, never changed in
    place, so readers need no lock. Stats: ``detections`` (jobs done), ``scans`` (full
    scans among them, the rest tracked), ``detect_ms`` / ``scan_ms`` (the newest job's and
    full scan's durations), ``detect_ms_total``, ``errors``.
    """

    def __init__(
        self,
        *,
        detect_fps: float,
        full_interval: float | None = None,
        hold: float = HOLD_SECONDS,
        pool: Executor | None = None,
        detector: FaceDetector | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``detect_fps`` 0: a job per offered frame if the previous one is done;
        ``full_interval`` None: ``SERVER_ROOM_FULL_SCAN_INTERVAL``; ``pool`` and
        ``detector`` None: the process-wide ones."""
        if full_interval is None:
            from django.conf import settings

            full_interval = settings.SERVER_ROOM_FULL_SCAN_INTERVAL
        self.min_interval = 1.0 / detect_fps if detect_fps > 0 else 0.0
        self.full_interval = full_interval
        self.hold = hold
        self._pool = pool
        self._detector = detector
        self._clock = clock
        self.boxes: list[Box] = []
        self.detect_ms: float | None = None
        self.scan_ms: float | None = None
        self.detect_ms_total = 0.0
        self.detections = 0
        self.scans = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._latest: np.ndarray | None = None
        self._busy = False
        self._generation = 0
        self._closed = False
        self._last_start = self._last_scan = self._seen_at = float("-inf")

    def offer(self, image: np.ndarray) -> None:
        """The video's newest frame (kept until a newer one: pass an array nobody writes to
        afterwards). Starts a job unless one is running or the rate says wait."""
        if self._closed:
            return
        self._latest = image
        now = self._clock()
        with self._lock:
            if self._busy or now - self._last_start < self.min_interval:
                return  # dropped, never queued
            self._busy = True
            self._last_start = now
            generation = self._generation
        try:
            (self._pool or detection_pool()).submit(self._job, generation)
        except RuntimeError:  # the pool is shutting down (process exit, tests resetting it)
            with self._lock:
                self._busy = False

    def reset(self) -> None:
        """Forget the boxes: a job still running is ignored and the next job scans."""
        with self._lock:
            self._generation += 1
            self.boxes = []
            self._last_scan = self._seen_at = float("-inf")

    def close(self) -> None:
        self._closed = True
        self._latest = None
        self.reset()

    def _job(self, generation: int) -> None:
        """In a pool thread: detect on the newest frame at the time the job *starts*."""
        try:
            image = self._latest
            if image is not None and not self._closed:
                self._detect(image, generation)
        except Exception as exc:  # keep the video flowing with the boxes it has
            self.errors += 1
            logger.warning("face detection failed: %s", exc)
        finally:
            with self._lock:
                self._busy = False

    def _detect(self, image: np.ndarray, generation: int) -> None:
        detector = self._detector or get_detector()
        with self._lock:
            previous, last_scan = self.boxes, self._last_scan
        now = self._clock()
        started = time.perf_counter()
        boxes: list[Box] | None = None
        scan_ms: float | None = None
        if previous and now - last_scan < self.full_interval:
            tracked = detector.detect_near(image, previous)
            if len(tracked) >= len(previous):
                boxes = tracked
        if boxes is None:  # a scan is due, there was nothing to track, or tracking lost a face
            scan_start = time.perf_counter()
            boxes = detector.detect(image)
            scan_ms = (time.perf_counter() - scan_start) * 1000
        ms = (time.perf_counter() - started) * 1000
        with self._lock:
            if generation != self._generation:
                return
            self.detections += 1
            self.detect_ms = ms
            self.detect_ms_total += ms
            if scan_ms is not None:
                self.scans += 1
                self.scan_ms = scan_ms
                self._last_scan = now
            if boxes:
                self.boxes, self._seen_at = boxes, now
            elif now - self._seen_at > self.hold:
                self.boxes = []
