"""Decoded WebRTC frames → the constant-rate raw inputs FFmpeg reads (a WHIP publisher).

A WHIP publisher's frames arrive decoded (aiortc decodes every received track) at whatever
rate the sender and the network give: 30 fps, 15 fps, nothing while a camera stalls, audio
in 20 ms frames with holes where packets were lost. FFmpeg's raw inputs carry no
timestamps: raw video is *N frames per second by count*, PCM is *samples by count*. So:

* **Video is sampled and held** on a fixed schedule: slot k is due at ``origin + k / fps``
  and gets the newest frame (``VideoSlots``). A slow sender's frames repeat, a fast one's
  are skipped, and however a sender behaves the server writes exactly ``fps`` frames per
  second: nothing a publisher sends makes it write more. Waiting for the next slot costs
  half a frame interval on average (17 ms at 30 fps).
* **Audio follows the video written** (``AudioLevel``): the PCM written is kept within a
  window of the video's media time, silence filling a gap (lost packets, a muted sender)
  and frames dropped while the audio runs ahead. Both raw inputs then start at 0 and stay
  in step in FFmpeg without timestamps.
* When the encoder falls behind (its input queue is full) due slots are **deferred**
  rather than written late: the schedule moves on (media time skips ahead of what was
  written), so latency cannot build up behind a slow encoder.

Pure: no I/O, no clocks. Callers pass ``time.monotonic()`` values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: at most this many seconds of due slots are written at once (an event loop that stalled
#: longer skips the rest instead of bursting them into the encoder)
MAX_BURST_SECONDS = 1.0
#: audio may lag the video written by this much before silence fills the gap: above the
#: jitter of 20 ms frames arriving (aiortc's audio jitter buffer prefetches 4 frames)
AUDIO_LOW_SECONDS = 0.15
#: audio may run ahead of the video written by this much before frames are dropped
AUDIO_HIGH_SECONDS = 0.3


@dataclass
class VideoSlots:
    """The constant-rate video schedule, from the first frame's arrival (``origin``)."""

    fps: int
    origin: float
    written: int = 0  # slots written (= frames FFmpeg got: its media time is written / fps)
    deferred: int = 0  # slots skipped: a stalled loop, or the encoder behind

    def due(self, now: float) -> int:
        """Slots due by ``now`` and not written yet, counted as written (at most
        ``MAX_BURST_SECONDS`` worth: the rest are deferred)."""
        # (the epsilon: a tick exactly at next_at() must find its slot despite rounding)
        count = math.floor((now - self.origin) * self.fps + 1e-6) + 1 - self.written
        if count <= 0:
            return 0
        burst = max(1, round(MAX_BURST_SECONDS * self.fps))
        if count > burst:
            self.defer(count - burst)
            count = burst
        self.written += count
        return count

    def defer(self, count: int) -> None:
        """``count`` slots of those just returned by ``due`` were not written: the schedule
        moves on without them (the origin later by their duration)."""
        if count > 0:
            self.origin += count / self.fps
            self.deferred += count

    def undo(self, count: int) -> None:
        """Of the slots ``due`` just returned, ``count`` could not be written: they are
        deferred, and no longer counted as written."""
        if count > 0:
            self.written -= count
            self.defer(count)

    def next_at(self) -> float:
        """When the next slot is due."""
        return self.origin + self.written / self.fps

    @property
    def media_seconds(self) -> float:
        return self.written / self.fps


@dataclass
class AudioLevel:
    """How much PCM to write so that audio stays in step with the video written."""

    rate: int = 48000
    written: int = 0  # samples written (FFmpeg's audio media time is written / rate)
    silence: int = 0  # samples of silence written to fill gaps
    dropped: int = 0  # samples of incoming frames dropped (audio ahead of the video)

    @property
    def seconds(self) -> float:
        return self.written / self.rate

    def admit(self, samples: int, video_seconds: float) -> tuple[int, bool]:
        """A frame of ``samples`` arrives: ``(silence to write first, keep the frame)``.

        The first frame (and any after a gap) is preceded by the silence that puts it at
        the video's media time; a frame that would put the audio more than
        ``AUDIO_HIGH_SECONDS`` ahead is dropped."""
        gap = self.pad(video_seconds, low=AUDIO_LOW_SECONDS if self.written else 0.0)
        if (self.written + samples) / self.rate > video_seconds + AUDIO_HIGH_SECONDS:
            self.dropped += samples
            return gap, False
        self.written += samples
        return gap, True

    def pad(self, video_seconds: float, low: float = AUDIO_LOW_SECONDS) -> int:
        """Silence to write now so the audio is not more than ``low`` behind the video;
        called on every video slot too, so a sender without audio packets still gets a
        continuous track. Fills to the video's time exactly."""
        behind = video_seconds - self.seconds
        if behind <= low:
            return 0
        samples = round(behind * self.rate)
        self.written += samples
        self.silence += samples
        return samples
