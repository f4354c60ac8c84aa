"""Face detection on frames pushed by a browser (WebSocket or HTTP), with per-client limits.

The consumer (``faces/consumers.py``) and the view (``faces/views.py``) only parse and
reply; everything else is here, so both transports enforce the same rules:

* **size before work**: a frame's byte size is checked before anything else, its pixel
  count from the image *header* (Pillow reads only the header) before it is decoded, so a
  small file that expands to a huge bitmap is refused without allocating it;
* **at most one frame in flight per client** (``FrameSession``): a frame arriving while the
  previous one is still being detected is answered ``busy`` at once — dropped, never queued,
  so a slow server makes the page's frame rate drop instead of its latency grow;
* **frames per second per client** (token bucket, ``FACE_MAX_FPS``);
* **detection off the event loop**, in the process's one detection pool
  (``faces.detector.detection_pool``, ``FACE_DETECT_THREADS``): a slow detection delays only
  its own client, never signaling or other sockets, and cannot exhaust the default executor
  that ``sync_to_async`` uses.

Errors carry a protocol ``code`` and an HTTP status (docs/protocol.md, "Face detection").
"""

from __future__ import annotations

import asyncio
import io
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from PIL import Image

from faces.detector import (
    BadImage,
    Box,
    DetectorParams,
    decode_image,
    detection_pool,
    get_detector,
)
from rtcsite.errors import Busy, ClientError, RateLimited, TooLarge
from rtcsite.ratelimit import TokenBucket

FRAME_TYPES = ("image/webp", "image/jpeg", "image/png")


def limits() -> dict[str, Any]:
    """What a client may send (told to it up front, so a page can size its frames)."""
    return {
        "max_frame_bytes": settings.FACE_MAX_FRAME_BYTES,
        "max_frame_pixels": settings.FACE_MAX_FRAME_PIXELS,
        "max_fps": settings.FACE_MAX_FPS,
        "types": list(FRAME_TYPES),
    }


# --- parameters ------------------------------------------------------------------------
def parse_params(overrides: Any) -> DetectorParams:
    """The configured parameters with a client's overrides (a JSON object), validated."""
    base = get_detector().params
    if overrides is None:
        return base
    if not isinstance(overrides, Mapping):
        raise ClientError("'params' must be an object of detection parameters.", code="bad-params")
    try:
        return base.with_overrides(overrides)
    except (TypeError, ValueError) as exc:
        raise ClientError(f"Bad detection parameters: {exc}.", code="bad-params") from exc


def params_from_query(query: Mapping[str, str]) -> DetectorParams:
    """Overrides from an HTTP query string (``?min_neighbors=3&equalize=true``)."""
    overrides: dict[str, Any] = {}
    for name, raw in query.items():
        text = raw.strip().lower()
        if text in ("true", "false"):
            overrides[name] = text == "true"
            continue
        try:
            number = float(text)
        except ValueError:
            raise ClientError(
                f"Bad detection parameters: {name} must be a number.", code="bad-params"
            ) from None
        if not math.isfinite(number):
            raise ClientError(
                f"Bad detection parameters: {name} must be a finite number.", code="bad-params"
            )
        overrides[name] = int(number) if number.is_integer() and "." not in text else number
    return parse_params(overrides or None)


# --- one frame -------------------------------------------------------------------------
@dataclass(frozen=True)
class Detection:
    """The answer to one frame: boxes in the frame's own pixel coordinates."""

    width: int
    height: int
    boxes: list[Box]
    detect_ms: float  # decode + detect, measured in the worker thread

    def as_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "boxes": [box.as_dict() for box in self.boxes],
            "detect_ms": round(self.detect_ms, 2),
        }


def check_frame(data: bytes) -> tuple[int, int]:
    """Refuse oversized, non-image or too-large-bitmap frames before decoding them."""
    limit = settings.FACE_MAX_FRAME_BYTES
    if not data:
        raise ClientError(
            "Empty frame: send the image bytes (WebP, JPEG or PNG).", code="bad-image"
        )
    if len(data) > limit:
        raise TooLarge(
            f"Frame has {len(data)} bytes; at most {limit} are accepted.",
            limit=limit,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
                kind = header.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ClientError(
            f"Frame is far too large: {exc}",
            code="too-many-pixels",
            status=413,
            limit=settings.FACE_MAX_FRAME_PIXELS,
        ) from exc
    except Exception as exc:  # Pillow raises many kinds for garbage
        raise ClientError("Not an image: send WebP, JPEG or PNG bytes.", code="bad-image") from exc
    if kind not in ("WEBP", "JPEG", "PNG"):
        raise ClientError(
            f"{kind} images are not accepted: send WebP, JPEG or PNG.", code="bad-image"
        )
    pixels = settings.FACE_MAX_FRAME_PIXELS
    if width * height > pixels:
        raise ClientError(
            f"Frame is {width}x{height}; at most {pixels} pixels are accepted.",
            code="too-many-pixels",
            status=413,
            limit=pixels,
        )
    return width, height


def detect_frame(data: bytes, params: DetectorParams | None = None) -> Detection:
    """Check, decode and detect one frame (blocking: call from a worker thread)."""
    started = time.perf_counter()
    check_frame(data)
    try:
        image = decode_image(data, settings.FACE_MAX_FRAME_PIXELS)
    except BadImage as exc:  # e.g. a truncated file whose header was fine
        raise ClientError(f"Could not decode the frame: {exc}.", code="bad-image") from exc
    boxes = get_detector().detect(image, params)
    height, width = image.shape[:2]
    return Detection(width, height, boxes, (time.perf_counter() - started) * 1000)


# --- one client ------------------------------------------------------------------------
@dataclass
class FrameSession:
    """One client's limits: a frame-rate bucket and the one-frame-in-flight rule."""

    params: DetectorParams = field(default_factory=lambda: get_detector().params)
    bucket: TokenBucket = field(
        default_factory=lambda: TokenBucket(
            settings.FACE_MAX_FPS, max(1, round(settings.FACE_MAX_FPS))
        )
    )
    in_flight: bool = False
    frames: int = 0  # frames received (numbers the replies)
    dropped: int = 0  # frames answered busy or rate-limited

    def admit(self) -> int:
        """Take a frame or refuse it (``Busy``/``RateLimited``); returns its number."""
        self.frames += 1
        if self.in_flight:
            self.dropped += 1
            # 429, not 503: the client sent a frame before its previous one was answered
            raise Busy(
                "Busy with the previous frame: wait for its answer before sending.", status=429
            )
        if not self.bucket.take():
            self.dropped += 1
            raise RateLimited(f"More than {settings.FACE_MAX_FPS:g} frames per second: slow down.")
        self.in_flight = True
        return self.frames

    def set_params(self, overrides: Any) -> DetectorParams:
        self.params = parse_params(overrides)
        return self.params

    async def detect(self, data: bytes, params: DetectorParams | None = None) -> Detection:
        """Detect an admitted frame in the detection pool; the session is free afterwards."""
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                detection_pool(), detect_frame, data, params or self.params
            )
        finally:
            self.in_flight = False


# HTTP clients have no connection: their sessions are kept per identity, in this process.
_http_sessions: dict[str, FrameSession] = {}
MAX_HTTP_SESSIONS = 10_000


def http_session(identity_id: str) -> FrameSession:
    session = _http_sessions.get(identity_id)
    if session is None:
        if len(_http_sessions) >= MAX_HTTP_SESSIONS:  # bounded: forget idle ones
            for key in [k for k, s in _http_sessions.items() if not s.in_flight]:
                del _http_sessions[key]
        session = _http_sessions[identity_id] = FrameSession()
    return session
