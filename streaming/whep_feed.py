"""One live stream's WebRTC rendition, demuxed once and handed to every WHEP viewer.

The stream's FFmpeg writes an extra H.264 + Opus output (``streaming.ffmpeg.build_command``
``webrtc_fd``) to a pipe; ``EncodedFeed`` reads that pipe in a thread with PyAV and hands
each packet, unchanged, to every subscriber on the event loop. A viewer's aiortc sender
then only packetises and encrypts it (``streaming/whep.py``): one encode for any number of
viewers, never an encoder per viewer.

* **The reader never waits for viewers**: FFmpeg blocks when the pipe is full, and that
  would stall the HLS/DASH outputs of the same process. Packets go to the loop with
  ``call_soon_threadsafe``; each subscription keeps only a short queue.
* **Newest packets only**: a subscription whose video queue is full drops it and skips to
  the next keyframe (a decodable restart), instead of queueing ever older video; audio
  drops its oldest packets.
* **Keyframe start**: a new subscription's video begins at the next keyframe (the
  encoder's GOP is short, ``STREAM_WHEP_GOP_SECONDS``); its audio at once.
* **Encoder runs**: the pipeline calls ``open()`` again for every FFmpeg it starts (a
  restart after a crash, a new run). Each run's timestamps start near zero; the feed
  rebases them so that every kind's timestamps keep increasing (by at least the wall time
  between the runs), which is what the viewers' RTP timestamps are made from.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from streaming.ffmpeg import WEBRTC_CONTAINER

logger = logging.getLogger(__name__)

KINDS = ("video", "audio")
# Every packet leaves the feed in its RTP clock (aiortc converts from the packet's
# time_base): one unit per run whatever time base the container chose.
TIME_BASES = {"video": Fraction(1, 90000), "audio": Fraction(1, 48000)}
# The smallest step between two runs' timestamps when no wall time passed (a 20 ms Opus
# frame, a 90 kHz tick per 1/100 s of video).
MIN_RUN_STEP = {"video": 900, "audio": 960}
# A subscription's queue (packets). Video: ~0.3 s at 30 fps, beyond that the viewer is
# not keeping up and skips to the next keyframe. Audio: 0.5 s of 20 ms Opus frames.
QUEUE_PACKETS = {"video": 10, "audio": 25}
PIPE_BYTES = 1 << 20  # room for a second of the rendition while the reader is descheduled


def _drain(fd: int) -> None:
    """Read ``fd`` to its end, discarding (the writer must never see a broken pipe)."""
    with contextlib.suppress(OSError):
        while os.read(fd, 1 << 16):
            pass


class FeedEnded(Exception):
    """The feed was closed: the stream ended (the session ends the viewer's track)."""


@dataclass
class FeedStats:
    runs: int = 0
    packets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    keyframes: int = 0
    skips: int = 0  # times a slow subscription skipped to the next keyframe
    errors: int = 0  # runs whose demuxing failed (logged)


class Subscription:
    """One viewer's packets of one kind, newest only (see the module docstring)."""

    def __init__(self, feed: EncodedFeed, kind: str):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.feed = feed
        self.kind = kind
        self.limit = QUEUE_PACKETS[kind]
        self.waiting_for_keyframe = kind == "video"
        self.closed = False
        self.delivered = 0
        self.skips = 0
        self.offered_while_waiting = 0  # packets passed over before the first keyframe
        self._queue: collections.deque[av.Packet] = collections.deque()
        self._ready = asyncio.Event()

    def offer(self, packet: av.Packet) -> None:
        """On the loop, from the feed: queue ``packet`` or drop it (never blocks)."""
        if self.closed:
            return
        if self.kind == "video":
            if len(self._queue) >= self.limit:
                self._queue.clear()
                self.waiting_for_keyframe = True
                self.skips += 1
                self.feed.stats.skips += 1
            if self.waiting_for_keyframe:
                if not packet.is_keyframe:
                    if not self.delivered:
                        self.offered_while_waiting += 1
                    return
                self.waiting_for_keyframe = False
        elif len(self._queue) >= self.limit:
            self._queue.popleft()
        self._queue.append(packet)
        self._ready.set()

    async def get(self) -> av.Packet:
        """The next packet; ``FeedEnded`` once the feed or this subscription is closed."""
        while not self._queue:
            if self.closed:
                raise FeedEnded(self.feed.name)
            self._ready.clear()
            await self._ready.wait()
        self.delivered += 1
        return self._queue.popleft()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._ready.set()
        self.feed._unsubscribe(self)


@dataclass
class _Timeline:
    """One kind's rebasing across runs: ``out = pts_in_rtp_clock + offset``."""

    offset: int | None = None
    last: int | None = None  # last timestamp handed out
    last_at: float = 0.0  # time.monotonic() of that packet


class EncodedFeed:
    """The WebRTC rendition of one live stream (see the module docstring).

    Created on the event loop by the pipeline; ``open()`` per encoder run, ``close()`` when
    the stream ends. ``subscribe(kind)`` for each viewer track.
    """

    def __init__(self, name: str = "feed", container: str = WEBRTC_CONTAINER):
        self.name = name
        self.container = container
        self.stats = FeedStats()
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop open() runs on
        self._subscriptions: dict[str, set[Subscription]] = {kind: set() for kind in KINDS}
        self._timelines = {kind: _Timeline() for kind in KINDS}
        self._threads: list[threading.Thread] = []

    # --- the encoder side ----------------------------------------------------------------
    def open(self) -> int:
        """A new pipe for the next encoder run; returns its write end for FFmpeg.

        The caller passes it to the child (``pass_fds``) and closes it after the spawn, so
        the reader sees EOF when that FFmpeg exits. The read end is read in a thread."""
        if self.closed:
            raise FeedEnded(self.name)
        self._loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):  # keep the default size if the limit is lower
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.stats.runs += 1
        thread = threading.Thread(
            target=self._read,
            args=(read_fd, self.stats.runs),
            name=f"whep-feed-{self.name}-{self.stats.runs}",
            daemon=True,
        )
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()
        return write_fd

    def close(self) -> None:
        """The stream ended: every subscription ends (their tracks end). Reader threads
        end at their pipe's EOF (when that FFmpeg exits)."""
        if self.closed:
            return
        self.closed = True
        for subs in self._subscriptions.values():
            for sub in list(subs):
                sub.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the reader threads (tests, and after the last FFmpeg exited)."""
        for thread in list(self._threads):
            thread.join(timeout)

    # --- the viewer side -----------------------------------------------------------------
    def subscribe(self, kind: str) -> Subscription:
        """A subscription to ``kind`` ("video" starts at the next keyframe)."""
        if self.closed:
            raise FeedEnded(self.name)
        sub = Subscription(self, kind)
        self._subscriptions[kind].add(sub)
        return sub

    def subscribers(self, kind: str = "video") -> int:
        return len(self._subscriptions[kind])

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.stats.runs,
            "packets": dict(self.stats.packets),
            "keyframes": self.stats.keyframes,
            "skips": self.stats.skips,
            "errors": self.stats.errors,
            "viewers": self.subscribers("video"),
        }

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions[sub.kind].discard(sub)

    # --- the reader thread ---------------------------------------------------------------
    def _read(self, fd: int, run: int) -> None:
        """Demux one run's pipe until EOF; hand every packet to the loop. Whatever goes
        wrong here, the pipe is read to its end: a reader that stopped would make FFmpeg
        fail on a broken pipe (or block on a full one), and the stream with it."""
        first: dict[str, int] = {}
        loop = self._loop
        assert loop is not None
        try:
            container = av.open(
                f"pipe:{fd}",
                format=self.container,
                # Start at the first packets instead of probing ~5 s of input.
                options={"probesize": "32", "analyzeduration": "0"},
            )
            with container:
                for packet in container.demux():
                    kind = packet.stream.type
                    if packet.pts is None or kind not in KINDS:
                        continue  # the demuxer's end-of-stream flush packets
                    self._rebase(packet, kind, first)
                    # A closed loop raises RuntimeError: keep draining so FFmpeg never blocks.
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(self._dispatch, kind, packet)
        except Exception as exc:  # FFmpeg exited before a header, a damaged packet, a bug
            self.stats.errors += 1
            logger.warning("%s: WebRTC output of run %d: %s", self.name, run, exc)
            _drain(fd)
        finally:
            os.close(fd)

    def _rebase(self, packet: av.Packet, kind: str, first: dict[str, int]) -> None:
        """Put ``packet`` on this feed's timeline for ``kind`` (in its RTP clock)."""
        base = TIME_BASES[kind]
        pts = round(packet.pts * packet.time_base / base)
        timeline = self._timelines[kind]
        now = time.monotonic()
        if kind not in first:  # this run's first packet of this kind
            first[kind] = pts
            if timeline.last is None:
                timeline.offset = -pts
            else:
                gap = round((now - timeline.last_at) / base)
                timeline.offset = timeline.last + max(MIN_RUN_STEP[kind], gap) - pts
        assert timeline.offset is not None
        out = pts + timeline.offset
        if timeline.last is not None and out <= timeline.last:
            out = timeline.last + 1  # never backwards, even if a run's own pts were
        timeline.last, timeline.last_at = out, now
        packet.pts = packet.dts = out
        packet.time_base = base

    def _dispatch(self, kind: str, packet: av.Packet) -> None:
        """On the loop: count, then offer to every subscription of ``kind``."""
        self.stats.packets[kind] += 1
        if kind == "video" and packet.is_keyframe:
            self.stats.keyframes += 1
        if self.closed:
            return
        for sub in list(self._subscriptions[kind]):
            sub.offer(packet)
