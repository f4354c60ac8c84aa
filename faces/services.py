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
* **a detection budget per identity** (``FACE_DETECT_BUDGET`` CPU seconds per second, shared
  by all of that identity's connections in this process; ``identity_budget``): what a frame
  costs is measured in the worker thread and paid after the fact, and while an identity is
  in debt its frames are refused at once (``detection-budget``), so one client cannot
  fill the detection pool with expensive frames and starve the others;
* **client-chosen parameters clamped** to what one frame may cost (``FACE_CLIENT_*``): the
  scale factor and minimum size at least, the detection width at most;
* **detection off the event loop**, in the process's one detection pool
  (``faces.detector.detection_pool``, ``FACE_DETECT_THREADS``): a slow detection delays only
  its own client, never signaling or other sockets, and cannot exhaust the default executor
  that ``sync_to_async`` uses.

Errors carry a protocol ``code`` and an HTTP status (docs/protocol.md, "Face detection").
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import time
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
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
        # client-chosen parameters are clamped to these; the identity's detection budget
        "min_scale_factor": settings.FACE_CLIENT_MIN_SCALE_FACTOR,
        "min_size": settings.FACE_CLIENT_MIN_SIZE,
        "max_detect_width": settings.FACE_CLIENT_MAX_DETECT_WIDTH,
        "detect_budget": settings.FACE_DETECT_BUDGET,
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
        params = base.with_overrides(overrides)
    except (TypeError, ValueError) as exc:
        raise ClientError(f"Bad detection parameters: {exc}.", code="bad-params") from exc
    return clamp_client_params(params, overrides)


def clamp_client_params(params: DetectorParams, chosen: Collection[str]) -> DetectorParams:
    """The ``chosen`` (client-set) values held to what one frame may cost: the cascade's
    work grows with pixels scanned (detect width), scales tried (scale factor) and the
    smallest window (min size). The operator's own settings are not clamped."""
    changes: dict[str, Any] = {}
    if "scale_factor" in chosen:
        changes["scale_factor"] = max(params.scale_factor, settings.FACE_CLIENT_MIN_SCALE_FACTOR)
    if "min_size" in chosen:
        changes["min_size"] = max(params.min_size, settings.FACE_CLIENT_MIN_SIZE)
    widest = settings.FACE_CLIENT_MAX_DETECT_WIDTH
    if "detect_width" in chosen and not 0 < params.detect_width <= widest:
        changes["detect_width"] = widest
    return replace(params, **changes) if changes else params


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


def _detect_costed(
    data: bytes, params: DetectorParams, budget: TokenBucket, loop: asyncio.AbstractEventLoop
) -> Detection:
    """``detect_frame``, paying the CPU seconds it took from ``budget`` on ``loop`` (the
    bucket's thread), even when it fails (slow decoding then a bad image is work all the
    same) or its caller has gone (a client disconnecting mid-frame still pays)."""
    started = time.thread_time()
    try:
        return detect_frame(data, params)
    finally:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody left to charge
            loop.call_soon_threadsafe(budget.spend, time.thread_time() - started)


# --- one identity ----------------------------------------------------------------------
# Budgets of this process, per identity; a full bucket is as good as none, so those are
# forgotten first when there are many.
_budgets: dict[str, TokenBucket] = {}
MAX_BUDGETS = 10_000


def identity_budget(identity_id: str) -> TokenBucket:
    """The detection budget (CPU seconds) ``identity_id`` shares across its connections."""
    budget = _budgets.get(identity_id)
    if budget is None:
        if len(_budgets) >= MAX_BUDGETS:
            for key in [k for k, b in _budgets.items() if b.full()]:
                del _budgets[key]
        budget = _budgets[identity_id] = TokenBucket(
            settings.FACE_DETECT_BUDGET, settings.FACE_DETECT_BUDGET_BURST
        )
    return budget


# --- one client ------------------------------------------------------------------------
@dataclass
class FrameSession:
    """One client's limits: a frame-rate bucket and the one-frame-in-flight rule, and its
    identity's detection budget."""

    identity: str = ""
    params: DetectorParams = field(default_factory=lambda: get_detector().params)
    bucket: TokenBucket = field(
        default_factory=lambda: TokenBucket(
            settings.FACE_MAX_FPS, max(1, round(settings.FACE_MAX_FPS))
        )
    )
    in_flight: bool = False
    frames: int = 0  # frames received (numbers the replies)
    dropped: int = 0  # frames answered busy or rate-limited

    def __post_init__(self) -> None:
        self.budget = identity_budget(self.identity)

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
        if not self.budget.ready():
            self.dropped += 1
            raise RateLimited(
                f"Your face-detection budget ({settings.FACE_DETECT_BUDGET:g} CPU seconds per "
                "second, shared by your connections) is spent: send fewer or cheaper frames.",
                code="detection-budget",
                retry_after=max(1, math.ceil(self.budget.seconds_to_ready())),
            )
        self.in_flight = True
        return self.frames

    def set_params(self, overrides: Any) -> DetectorParams:
        self.params = parse_params(overrides)
        return self.params

    async def detect(self, data: bytes, params: DetectorParams | None = None) -> Detection:
        """Detect an admitted frame in the detection pool, and pay for it; the session is
        free afterwards."""
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                detection_pool(), _detect_costed, data, params or self.params, self.budget, loop
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
        session = _http_sessions[identity_id] = FrameSession(identity_id)
    return session
