"""The one OpenCV face detector of the site, and the one pool of threads it runs in.

Used by the echo room (boxes drawn on returned video), by pushed-frame detection and by
the live-stream overlay, so loading, pre-processing, parameters and box scaling live here
once (drawing and tracking on video: ``faces/boxes.py``). OpenCV's Haar frontal-face
cascade is small and needs no download (it ships in ``opencv-python-headless``).

Why it looks like this:

* **No histogram equalisation by default.** On the astronaut test image it made the
  cascade find a second, false face at every resize tried below 480 px.
* **min_neighbors 8, not OpenCV's usual 3-5.** Lossy frames (WebP from a browser, VP8 video)
  made the cascade report a second, false face on the astronaut in 10 of 120 encodings tried
  (qualities 50-100, three frame sizes, four detect widths) at 5, 2 at 6, none at 8; the real
  face still scored at 8 in all of them (at 10 it was missed in 4).
* **Resize before detecting.** Cost grows with pixels; faces in a webcam frame are large,
  so detecting on a ``detect_width``-wide copy (default 320 px) and scaling the boxes back
  is several times cheaper at the same hit rate.
* **Grayscale in, no colour conversion when avoidable.** A YUV frame's Y plane *is* the
  grayscale image: callers holding YUV pass it directly (2-D array) and skip a conversion.
* **One warm cascade per thread.** ``CascadeClassifier`` is not documented as thread-safe;
  detection runs in pool threads off the event loop, so each thread loads its own once
  (a few ms) and reuses it.
* **OpenCV's own thread pool is capped** (``FACE_OPENCV_THREADS``, default 1): callers
  parallelise across sessions; letting every call fan out over all cores as well makes
  sessions fight each other and starves the event loop.
* **One detection pool per process** (``detection_pool``, ``FACE_DETECT_THREADS``): every
  feature's detection leaves the event loop for these threads, so the process's detection
  CPU has one bound whatever mix of pushed frames, echo sessions and stream overlays runs;
  each feature bounds its own share (one job in flight per client or video, a rate cap).
* **Tracking between scans** (``detect_near``): video callers that already know where the
  faces were search only around them, at the faces' own scale: ~3 ms instead of ~37 ms
  for a 640x480 frame. On 36 VP8-coded astronaut frames per size it found the face in
  every frame at 640x480 and 1280x720 (face moved 0, 10 or 25 px) and at 320x240 when
  it moved up to 10 px (25 px is past the margin of a 44-px face: the caller rescans);
  the full scan at 320 px found it in 36, 36 and 17 of 36 at those sizes. No extra boxes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any, Generic, TypeVar

import cv2
import numpy as np

CASCADE_FILE = "haarcascade_frontalface_default.xml"

#: ``detect_near``: the search region extends this share of a face's width on each side
#: (a face at 20 fps moving a quarter of its width per frame is still inside after 2 frames
#: at 5 detections/s), is resized so the face is about TRACK_FACE_PX wide, and only faces
#: between TRACK_SIZES times the previous size are looked for.
TRACK_MARGIN = 0.5
TRACK_FACE_PX = 48
TRACK_SIZES = (0.7, 1.4)


class BadImage(ValueError):
    """The bytes are not an image we can decode, or it is too large."""


@dataclass(frozen=True)
class Box:
    """A face rectangle in source-image pixel coordinates."""

    x: int
    y: int
    w: int
    h: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class DetectorParams:
    """Detection parameters; ``validated()`` refuses values OpenCV would misbehave on."""

    scale_factor: float = 1.1
    min_neighbors: int = 8
    min_size: int = 30  # pixels, in source coordinates
    detect_width: int = 320  # 0: detect at full size
    equalize: bool = False  # histogram equalisation: measured to add false positives here

    LIMITS = {
        "scale_factor": (1.01, 2.0),
        "min_neighbors": (0, 50),
        "min_size": (8, 2000),
        "detect_width": (0, 4096),
    }

    def validated(self) -> DetectorParams:
        if not isinstance(self.equalize, bool):
            raise ValueError("equalize must be true or false")
        for name, (low, high) in self.LIMITS.items():
            value = getattr(self, name)
            kind = float if name == "scale_factor" else int
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if kind is int and not float(value).is_integer():
                raise ValueError(f"{name} must be a whole number")
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}")
        if 0 < self.detect_width < 64:
            raise ValueError("detect_width must be 0 (full size) or at least 64")
        return self

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> DetectorParams:
        """A copy with client-supplied overrides, validated (unknown names refused)."""
        if not overrides:
            return self
        unknown = set(overrides) - {*self.LIMITS, "equalize"}
        if unknown:
            raise ValueError(f"unknown detection parameter(s): {', '.join(sorted(unknown))}")
        return replace(self, **dict(overrides)).validated()

    @classmethod
    def from_settings(cls) -> DetectorParams:
        from django.conf import settings

        return cls(
            scale_factor=settings.FACE_SCALE_FACTOR,
            min_neighbors=settings.FACE_MIN_NEIGHBORS,
            min_size=settings.FACE_MIN_SIZE,
            detect_width=settings.FACE_DETECT_WIDTH,
            equalize=settings.FACE_EQUALIZE,
        ).validated()


class FaceDetector:
    """Thread-safe Haar-cascade face detector (one warm classifier per thread)."""

    def __init__(self, params: DetectorParams | None = None, opencv_threads: int = 1) -> None:
        self.params = (params or DetectorParams()).validated()
        self._local = threading.local()
        self._path = cv2.data.haarcascades + CASCADE_FILE
        if opencv_threads > 0:
            cv2.setNumThreads(opencv_threads)
        self._cascade()  # fail now, not on the first frame, if the file is missing

    def _cascade(self) -> cv2.CascadeClassifier:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = cv2.CascadeClassifier(self._path)
            if cascade.empty():
                raise RuntimeError(f"could not load the face cascade {self._path}")
            self._local.cascade = cascade
        return cascade

    def detect(self, image: np.ndarray, params: DetectorParams | None = None) -> list[Box]:
        """Faces in ``image``: a 2-D grayscale array (e.g. a Y plane) or H x W x 3 BGR."""
        p = params or self.params
        gray = to_gray(image)
        height, width = gray.shape[:2]
        scale = 1.0
        if p.detect_width and width > p.detect_width:
            scale = width / p.detect_width
            gray = cv2.resize(
                gray, (p.detect_width, round(height / scale)), interpolation=cv2.INTER_AREA
            )
        if p.equalize:
            gray = cv2.equalizeHist(gray)
        min_side = max(8, round(p.min_size / scale))
        found = self._cascade().detectMultiScale(
            gray,
            scaleFactor=p.scale_factor,
            minNeighbors=p.min_neighbors,
            minSize=(min_side, min_side),
        )
        return scale_boxes(found, scale, width, height)

    def detect_near(
        self, image: np.ndarray, previous: Sequence[Box], params: DetectorParams | None = None
    ) -> list[Box]:
        """Faces close to ``previous`` boxes (same image size): tracking, not a full scan.

        Each previous face is looked for in a region around it, scaled so the face is about
        ``TRACK_FACE_PX`` wide, at sizes within ``TRACK_SIZES`` of its old size. New faces
        elsewhere are not found: callers run a full ``detect`` now and then, and whenever
        this finds fewer faces than it was given.
        """
        p = params or self.params
        gray = to_gray(image)
        height, width = gray.shape[:2]
        cascade = self._cascade()
        found: list[Box] = []
        for box in previous:
            margin = round(box.w * TRACK_MARGIN)
            x0, y0 = max(0, box.x - margin), max(0, box.y - margin)
            x1, y1 = min(width, box.x + box.w + margin), min(height, box.y + box.h + margin)
            if x1 - x0 < 24 or y1 - y0 < 24:
                continue
            region = gray[y0:y1, x0:x1]
            ratio = min(1.0, TRACK_FACE_PX / max(1, box.w))
            if ratio < 1.0:
                size = (max(24, round((x1 - x0) * ratio)), max(24, round((y1 - y0) * ratio)))
                region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
            face = box.w * ratio
            low = max(24, round(face * TRACK_SIZES[0]))
            high = max(low + 1, round(face * TRACK_SIZES[1]))
            hits = cascade.detectMultiScale(
                region,
                scaleFactor=p.scale_factor,
                minNeighbors=p.min_neighbors,
                minSize=(low, low),
                maxSize=(high, high),
            )
            for hit in scale_boxes(hits, 1.0 / ratio, x1 - x0, y1 - y0):
                moved = Box(hit.x + x0, hit.y + y0, hit.w, hit.h)
                if not any(_centre_inside(moved, other) for other in found):
                    found.append(moved)  # two close faces' regions overlap: count each once
        return found


def _centre_inside(box: Box, other: Box) -> bool:
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    return other.x <= cx <= other.x + other.w and other.y <= cy <= other.y + other.h


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"unsupported image shape {image.shape}")


def scale_boxes(found: Iterable[Iterable[int]], scale: float, width: int, height: int) -> list[Box]:
    """Boxes from a resized detection back in source coordinates, clipped to the image."""
    boxes = []
    for x, y, w, h in found:
        x0, y0 = max(0, round(x * scale)), max(0, round(y * scale))
        x1, y1 = min(width, round((x + w) * scale)), min(height, round((y + h) * scale))
        if x1 > x0 and y1 > y0:
            boxes.append(Box(x0, y0, x1 - x0, y1 - y0))
    return boxes


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes to BGR, refusing non-images and oversized images.

    Callers cap the byte size first; OpenCV's own pixel cap (``OPENCV_IO_MAX_IMAGE_PIXELS``,
    2^30 by default) bounds what a small compressed file can expand to.
    """
    if not data:
        raise BadImage("empty frame")
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None:
        raise BadImage("not a decodable image (JPEG, PNG or WebP expected)")
    height, width = image.shape[:2]
    if width * height > max_pixels:
        raise BadImage(f"image is {width}x{height}; at most {max_pixels} pixels are accepted")
    return image


T = TypeVar("T")


class _OnePerProcess(Generic[T]):
    """A value made on first use, once per process (settings are read then, not at import)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._make()
                value = self._value
        return value

    def forget(self) -> T | None:
        with self._lock:
            old, self._value = self._value, None
        return old


def _make_detector() -> FaceDetector:
    from django.conf import settings

    return FaceDetector(DetectorParams.from_settings(), opencv_threads=settings.FACE_OPENCV_THREADS)


def _make_pool() -> ThreadPoolExecutor:
    from django.conf import settings

    threads = settings.FACE_DETECT_THREADS or os.cpu_count() or 1
    return ThreadPoolExecutor(threads, thread_name_prefix="face-detect")


_detector = _OnePerProcess(_make_detector)
_pool = _OnePerProcess(_make_pool)


def get_detector() -> FaceDetector:
    """The process-wide detector with parameters from settings (created once, warm)."""
    return _detector.get()


def detection_pool() -> ThreadPoolExecutor:
    """The process-wide detection threads (``FACE_DETECT_THREADS``; 0: one per core)."""
    return _pool.get()


def reset_detection_pool() -> None:
    """Forget the pool (after ``FACE_DETECT_THREADS`` changed, e.g. in tests); running work
    finishes in the old threads."""
    old = _pool.forget()
    if old is not None:
        old.shutdown(wait=False)
