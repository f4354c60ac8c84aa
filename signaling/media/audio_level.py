"""A vectorised replacement for aiortc's per-frame audio level, which runs on the event loop.

aiortc's sender computes the RFC 6465 audio level of every outgoing audio frame (50 per
second per peer) in ``aiortc.rtp.compute_audio_level_dbov``: a Python loop over every
sample, on the event loop that also carries signaling. ``install()`` swaps in the same
computation in NumPy, far cheaper (docs/decisions.md, "Audio level computed in NumPy"), with
the same result
(tests/unit/test_server_media_tracks.py compares both). The sender looks the function up
on the module at each call, so replacing the module attribute is enough.
"""

from __future__ import annotations

import math

import numpy as np
from aiortc import rtp
from av import AudioFrame

MAX_SAMPLE = 32767
MIN_LEVEL, MAX_LEVEL = -127, 0

_original = rtp.compute_audio_level_dbov


def audio_level_dbov(frame: AudioFrame) -> int:
    """RFC 6465 level of a packed s16 frame, computed exactly as aiortc does."""
    samples = np.frombuffer(frame.planes[0], dtype=np.int16).astype(np.int64)
    # int64 sum of squares, no BLAS: NumPy's float dot would wake OpenBLAS's spinning
    # thread pool, which keeps a core busy.
    energy = int((samples * samples).sum())
    rms = math.sqrt(energy / (frame.samples * MAX_SAMPLE * MAX_SAMPLE))
    if rms <= 0:
        return MIN_LEVEL
    return round(min(MAX_LEVEL, max(MIN_LEVEL, 20 * math.log10(rms))))


def install() -> None:
    rtp.compute_audio_level_dbov = audio_level_dbov


def original(frame: AudioFrame) -> int:
    """aiortc's own implementation (for comparison in tests)."""
    return _original(frame)
