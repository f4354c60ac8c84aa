"""One live stream: uploaded WebM chunks → one FFmpeg → CMAF segments, HLS and DASH.

``StreamPipeline`` is plain asyncio (no Django models or views), so ingest endpoints,
consumers, management commands and tests drive it the same way::

    pipeline = StreamPipeline(output_dir, PipelineConfig.from_settings())
    await pipeline.feed(0, first_chunk)   # validates the WebM header, starts FFmpeg
    await pipeline.feed(1, chunk)         # duplicates ignored, early chunks held, ...
    await pipeline.stop()                 # FFmpeg finalises: #EXT-X-ENDLIST, static MPD

The path of a chunk: sequence check (``chunks.ReorderBuffer``) → WebM structure check
(``webm.WebMStreamChecker``) → bounded byte queue → writer task → FFmpeg's stdin (one
continuous stream). When the queue is full ``feed`` raises ``Backpressure`` (or waits up
to ``wait`` seconds first): memory stays bounded, and the caller tells the publisher to
slow down. The errors ``feed`` raises are ``rtcsite.errors.ClientError``s, told to the
publisher as they are. Before FFmpeg starts, the source the header declares is checked
(``webm.check_source``: frame size, codecs); one the site does not take fails the stream.
FFmpeg's stderr is kept as a bounded tail; if FFmpeg exits on its own the state becomes
``failed``: ``reason`` is short fixed text for the public (status, viewers, lobby), the
tail goes to ``failure_detail`` (staff: admin, logs) as it can name server paths. FFmpeg
is always waited for (no zombies) and killed if it does not finish in time or the pipeline
is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings

from rtcsite import logctx, metrics
from rtcsite.errors import Busy, ClientError, Conflict
from streaming import runs
from streaming.chunks import Chunk, Gap, HeldBufferFull, Released, ReorderBuffer
from streaming.clock import (
    ClockError,
    StreamClock,
    check_capture_ms,
    now_ms,
    read_clock,
    write_clock,
)
from streaming.ffmpeg import ChildLimits, EncoderOptions, build_command, ffmpeg_binary, spawn
from streaming.ladder import Rendition, configured_ladder, renditions_for_source
from streaming.lowlatency import write_mode
from streaming.playlists import finalize_vod, segment_files
from streaming.rawfeed import RawFeed, RawSource
from streaming.webm import (
    MAX_HEADER_ELEMENT,
    StreamInfo,
    UnsupportedSource,
    WebMError,
    WebMStreamChecker,
    check_source,
)

__all__ = ["PipelineConfig", "PipelineState", "RawSource", "StreamPipeline"]

logger = logging.getLogger(__name__)

MAX_STDERR_LINE = 400  # characters kept per FFmpeg stderr line
# Public reasons of a failed encode (FFmpeg's own words go to ``failure_detail``).
ENCODER_FAILED = "encoder failed"
ENCODER_NOT_STARTED = "encoder could not start"
ENCODER_KEPT_FAILING = "encoder failed again after {restarts} restarts"
# Signals from outside (an operator, systemd, the kernel's OOM killer): the encoder is
# restarted. A crash (SIGSEGV, SIGABRT: e.g. its own memory limit) would recur: it fails.
RESTART_SIGNALS = frozenset(
    {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}
)


class PipelineState(enum.StrEnum):
    IDLE = "idle"  # created, waiting for the first chunk (FFmpeg not started)
    LIVE = "live"
    STOPPING = "stopping"  # stdin closed, FFmpeg finalising
    ENDED = "ended"
    FAILED = "failed"


class Backpressure(Busy):
    """FFmpeg is behind: the chunk was NOT accepted; send it again (same seq) later."""

    def __init__(self, queue_bytes: int, limit: int, chunk_bytes: int):
        self.queue_bytes = queue_bytes
        self.limit = limit
        self.chunk_bytes = chunk_bytes
        super().__init__(
            f"busy: {queue_bytes} bytes queued for the encoder (limit {limit}); "
            f"retry this chunk ({chunk_bytes} bytes) shortly",
            queue_bytes=queue_bytes,
        )


class InvalidChunk(ClientError):
    """The chunk (or what came with it) is not acceptable: NOT accepted. Carries ``seq``."""

    code = "invalid"


class StreamClosed(Conflict):
    """The stream has ended or failed; it takes no more chunks."""

    code = "closed"


@dataclass(frozen=True)
class FeedResult:
    status: str  # "accepted", "held" (early, waiting for a gap), "duplicate"
    seq: int
    released: int  # chunks passed on to the encoder by this call
    queue_bytes: int


@dataclass(frozen=True)
class PipelineConfig:
    """One stream's whole configuration. The ``STREAM_*`` settings are the defaults of the
    fields without one here (``from_settings``)."""

    ladder: tuple[Rendition, ...]
    encoder: EncoderOptions
    max_queue_bytes: int  # bytes waiting for FFmpeg's stdin
    max_chunk_bytes: int
    gap_timeout: float  # seconds to wait for a missing chunk before skipping it
    idle_timeout: float | None  # seconds without chunks → stop as ended; None: never
    stop_timeout: float  # seconds FFmpeg may take to finalise after stdin closes
    max_source_side: int  # frame size a header may declare (webm.check_source)
    max_source_pixels: int
    limits: ChildLimits  # memory, niceness, OOM score of every FFmpeg child
    max_held_bytes: int = 8 << 20  # early chunks waiting for a gap to fill
    start_timeout: float = 30.0  # seconds from creation to the first chunk (with idle_timeout)
    stderr_lines: int = 40
    first_seq: int = 0
    tick: float = 0.1  # housekeeping period (gap and idle timers)
    face_overlay: bool = False  # draw server-side face boxes (streaming/overlay.py)
    # A killed FFmpeg is restarted this many times per stream (streaming/runs.py), then
    # the stream fails. 0: the first kill fails it.
    max_restarts: int = 0
    # Continue a stream another process was running (it died): the WebM header and the
    # earlier encoder runs are read from the folder; chunks start at any sequence number.
    resume: bool = False
    # Also encode the WebRTC rendition (streaming/whep_feed.py) for WHEP viewers.
    webrtc_output: bool = False

    def __post_init__(self) -> None:
        if self.max_chunk_bytes > self.max_queue_bytes:
            raise ValueError("max_chunk_bytes must not exceed max_queue_bytes")
        if not self.ladder:
            raise ValueError("the ladder needs at least one rendition")

    @classmethod
    def from_settings(cls, **overrides: Any) -> PipelineConfig:
        values: dict[str, Any] = {
            "max_queue_bytes": settings.STREAM_QUEUE_BYTES,
            "max_chunk_bytes": settings.STREAM_MAX_CHUNK_BYTES,
            "gap_timeout": settings.STREAM_GAP_TIMEOUT,
            "idle_timeout": settings.STREAM_IDLE_TIMEOUT or None,
            "stop_timeout": settings.STREAM_STOP_TIMEOUT,
            "max_source_side": settings.STREAM_SOURCE_MAX_SIDE,
            "max_source_pixels": settings.STREAM_SOURCE_MAX_PIXELS,
            "max_restarts": settings.STREAM_ENCODER_RESTARTS,
            "webrtc_output": settings.STREAM_WHEP,
            **overrides,
        }
        if "ladder" not in values:
            values["ladder"] = configured_ladder()
        if "encoder" not in values:
            values["encoder"] = EncoderOptions.from_settings()
        if "limits" not in values:
            values["limits"] = ChildLimits.from_settings()
        return cls(**values)


@dataclass
class _Counters:
    bytes_in: int = 0  # bytes of chunks passed the checks
    bytes_written: int = 0  # bytes written to FFmpeg's stdin
    rejected: int = 0  # chunks refused as not WebM (first or later)
    resyncs: int = 0
    dropped_bytes: int = 0  # bytes dropped while resynchronising after a gap
    backpressure: int = 0  # feed() calls answered "busy"
    stderr_lines: int = 0


class StreamPipeline:
    """One stream's chunks → FFmpeg, built once with its whole ``config``.

    ``on_state(pipeline)`` is called on every state change, synchronously: it must not
    block (a caller with I/O to do schedules it).
    """

    def __init__(
        self,
        output_dir: Path | str,
        config: PipelineConfig | None = None,
        *,
        name: str = "",
        binary: str | None = None,
        on_state: Callable[[StreamPipeline], Any] | None = None,
    ):
        self.output_dir = Path(output_dir)
        self.config = config or PipelineConfig.from_settings()
        self.name = name or self.output_dir.name
        self.binary = binary
        self._on_state = on_state
        self.state = PipelineState.IDLE
        self.reason = ""  # why it ended or failed: short, public (no FFmpeg output)
        self.failure_detail = ""  # staff only: FFmpeg's exit and its last stderr lines
        self.last_error = ""  # the latest refused chunk or skipped gap, for the publisher
        self.created_at = time.monotonic()
        self.started_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.renditions: tuple[Rendition, ...] = ()
        # Wall-clock ms of media time 0 as the publisher captured it (given with a chunk
        # before FFmpeg starts); None: the first chunk's arrival is used. streaming/clock.py.
        self.capture_ms: int | None = None
        self.clock: StreamClock | None = None
        self.command: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self.counters = _Counters()
        self.stderr_tail: deque[str] = deque(maxlen=self.config.stderr_lines)
        self._reorder = ReorderBuffer(
            first_seq=self.config.first_seq,
            gap_timeout=self.config.gap_timeout,
            max_held_bytes=self.config.max_held_bytes,
        )
        self._checker = WebMStreamChecker(max_element=self.config.max_chunk_bytes)
        self._queue: deque[bytes] = deque()
        self._queue_bytes = 0
        self._data_event = asyncio.Event()  # writer: something to write (or closing)
        self._space_event = asyncio.Event()  # feed(wait=...): bytes left the queue
        self._closing = False  # no more input: the writer closes stdin when the queue is empty
        self._last_chunk_at = time.monotonic()
        self._tasks: set[asyncio.Task] = set()  # every task of this pipeline, kept referenced
        self._start_task: asyncio.Task | None = None
        self._writer_task: asyncio.Task | None = None
        self._stderr_task: asyncio.Task | None = None
        self._monitor: asyncio.Task | None = None
        # Encoder runs (streaming/runs.py): run k > 0 writes into run<k>/ after a restart
        # or a takeover, and the top-level playlists are stitched from every run.
        self.run = 0
        self.restarts = 0  # encoder restarts after a kill (``_restart``: counted there only)
        self.exits: list[int] = []  # every FFmpeg's exit code, in order (``_exited``)
        self._header: bytes | None = None  # the WebM bytes before the first Cluster
        self._header_buf: bytearray | None = bytearray()
        self._segments_before: dict[int, int] = {}  # segments of the closed runs, per rep
        self._stitcher: asyncio.Task | None = None
        self._stitched_mtime: int | None = None
        self._final = False  # the VOD outputs are being written: no more live stitching
        self._resume_first_chunk = False
        # A WebRTC publisher (``start_raw``): decoded frames instead of WebM chunks.
        self._raw: RawFeed | None = None
        self._raw_source: RawSource | None = None
        # The encoded WebRTC rendition every WHEP viewer gets (one encode for all of them).
        self.webrtc_feed: Any = None
        if self.config.webrtc_output:
            from streaming.whep_feed import EncodedFeed

            self.webrtc_feed = EncodedFeed(self.name)
        if self.config.resume:
            self._prime_from_disk()
        self._ticker = self._task(self._tick())
        self._finished = asyncio.Event()

    # --- public API --------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def queue_bytes(self) -> int:
        return self._queue_bytes

    @property
    def closed(self) -> bool:
        return self.state in (PipelineState.ENDED, PipelineState.FAILED)

    async def feed(
        self, seq: int, data: bytes, *, wait: float = 0.0, capture_ms: Any = None
    ) -> FeedResult:
        """Offer chunk ``seq``. Raises ``Backpressure``, ``InvalidChunk`` or ``StreamClosed``.

        ``wait``: seconds to wait for queue space before answering ``Backpressure`` (this
        slows the uploader down instead of refusing at once). ``capture_ms``: the
        publisher's capture clock (``streaming.clock.check_capture_ms``); it anchors the
        timelines if given before FFmpeg starts, and is ignored after.
        """
        if self.state not in (PipelineState.IDLE, PipelineState.LIVE):
            raise StreamClosed(
                f"stream is {self.state}" + (f": {self.reason}" if self.reason else "")
            )
        if self._raw_source is not None:
            raise Conflict(
                "This stream is being published over WebRTC (WHIP): it takes no chunks.",
                code="publishing",
            )
        if not isinstance(seq, int) or seq < self.config.first_seq:
            raise InvalidChunk(
                f"sequence number must be an integer >= {self.config.first_seq}", seq=seq
            )
        if self._resume_first_chunk:
            # Taking over a stream mid-way: numbering goes on from the publisher's.
            self._resume_first_chunk = False
            self._reorder = ReorderBuffer(
                first_seq=seq,
                gap_timeout=self.config.gap_timeout,
                max_held_bytes=self.config.max_held_bytes,
            )
        if seq < self._reorder.first_seq:  # sent to the process that died: gone with it
            return FeedResult("duplicate", seq, 0, self._queue_bytes)
        if capture_ms is not None and self.state == PipelineState.IDLE and not self.config.resume:
            try:
                self.capture_ms = check_capture_ms(capture_ms)
            except ClockError as exc:
                raise InvalidChunk(str(exc), seq=seq) from exc
        if not isinstance(data, bytes):
            data = bytes(data)  # a bytearray/memoryview from the caller must not change later
        if not data:
            raise InvalidChunk(f"chunk seq={seq} is empty", seq=seq)
        if len(data) > self.config.max_chunk_bytes:
            raise InvalidChunk(
                f"chunk seq={seq} has {len(data)} bytes (limit {self.config.max_chunk_bytes})",
                seq=seq,
            )
        if self._reorder.seen(seq):
            self._reorder.push(seq, data, time.monotonic())  # counts and logs the duplicate
            return FeedResult("duplicate", seq, 0, self._queue_bytes)
        if not self._has_space(len(data)):
            if wait > 0:
                await self._wait_for_space(len(data), wait)
                if self.state not in (PipelineState.IDLE, PipelineState.LIVE):
                    raise StreamClosed(f"stream is {self.state}: {self.reason}")
                if self._reorder.seen(seq):
                    return FeedResult("duplicate", seq, 0, self._queue_bytes)
            if not self._has_space(len(data)):
                self.counters.backpressure += 1
                raise Backpressure(self._queue_bytes, self.config.max_queue_bytes, len(data))

        # From here to the end of the enqueueing there is no await: feeds are atomic.
        now = time.monotonic()
        forward: bytes | None = None
        if seq == self._reorder.next_seq:
            try:
                forward = self._checker.check(data)
            except WebMError as exc:
                self.counters.rejected += 1
                self.last_error = f"chunk seq={seq} refused: {exc}"
                logger.warning("%s: %s", self.name, self.last_error)
                raise InvalidChunk(self.last_error, seq=seq) from exc
        try:
            released = self._reorder.push(seq, data, now)
        except HeldBufferFull as exc:
            self.counters.backpressure += 1
            raise Backpressure(
                self._reorder.held_bytes, self.config.max_held_bytes, len(data)
            ) from exc
        self._last_chunk_at = now
        count = 0
        if forward is not None:
            # The first released item is this very chunk, already checked.
            released = released[1:]
            self._enqueue(forward, len(data))
            count += 1
        count += self._process(released)
        status = "accepted" if seq < self._reorder.next_seq else "held"
        if self.state == PipelineState.IDLE and self._checker.info is not None:
            await self._ensure_started()
        return FeedResult(status, seq, count, self._queue_bytes)

    async def start_raw(self, source: RawSource, capture_ms: int | None = None) -> None:
        """Take decoded frames (a WebRTC publisher) instead of chunks, and start FFmpeg.

        ``source``: the first video frame's size, whether audio comes. ``capture_ms``: the
        epoch ms of media time 0 if the caller knows the capture clock; else now (the first
        frame's arrival). Raises ``StreamClosed`` (a source the site does not take, FFmpeg
        not starting) or ``Conflict`` (chunks or another source came first).
        """
        if self.state != PipelineState.IDLE or self.config.resume:
            raise StreamClosed(f"stream is {self.state}")
        if self._raw_source is not None or self._checker.info is not None or self._queue:
            raise Conflict("This stream already has a source.", code="publishing")
        self._raw_source = source
        self._header_buf = None  # no WebM header to keep
        if capture_ms is not None:
            self.capture_ms = check_capture_ms(capture_ms)
        self._last_chunk_at = time.monotonic()
        await self._ensure_started()

    def feed_video(self, frame: Any, arrival: float | None = None) -> None:
        """A decoded video frame (``av.VideoFrame``) of the WebRTC publisher; never blocks:
        the newest frame is written on the stream's frame schedule (``streaming.rawfeed``)."""
        if self._raw is not None and self.state == PipelineState.LIVE:
            self._raw.video(frame)
            self._last_chunk_at = arrival if arrival is not None else time.monotonic()

    def feed_audio(self, frame: Any, arrival: float | None = None) -> None:
        """A decoded audio frame (``av.AudioFrame``) of the WebRTC publisher."""
        if self._raw is not None and self.state == PipelineState.LIVE:
            self._raw.audio_frame(frame)
            self._last_chunk_at = arrival if arrival is not None else time.monotonic()

    @property
    def source_info(self) -> StreamInfo | None:
        """What the source is: the WebM header's tracks, or the WebRTC publisher's."""
        if self._raw_source is not None:
            return self._raw_source.info
        return self._checker.info

    async def stop(self, reason: str = "stopped by the publisher") -> PipelineState:
        """End the stream: flush, close FFmpeg's stdin, wait for it to finalise the outputs."""
        if self.closed:
            return self.state
        if self._start_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._start_task)
        if self.state == PipelineState.IDLE:
            await self._finish(PipelineState.ENDED, reason)
            return self.state
        if self.state == PipelineState.LIVE:
            self.reason = reason
            self._process(self._reorder.flush())
            self._set_state(PipelineState.STOPPING)
            if self._raw is not None:
                # Audio ends first: FFmpeg may be waiting for audio to interleave before it
                # reads the video still queued, which would wait for it forever.
                self._raw.detach()
            self._closing = True
            self._data_event.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._finished.wait()), self.config.stop_timeout)
        except TimeoutError:
            logger.error(
                "%s: FFmpeg did not finish within %ss; killing it",
                self.name,
                self.config.stop_timeout,
            )
            limit = self.config.stop_timeout
            await self._kill(f"FFmpeg did not finish within {limit:g} s after the end of input")
        except asyncio.CancelledError:
            await self._kill("cancelled while stopping")
            raise
        return self.state

    async def abort(self, reason: str = "aborted") -> PipelineState:
        """Kill FFmpeg now (no finalisation); the state becomes ``failed``."""
        if not self.closed:
            await self._kill(reason)
        return self.state

    async def wait_closed(self) -> PipelineState:
        """Wait until the stream has ended or failed (FFmpeg reaped, outputs final)."""
        await self._finished.wait()
        return self.state

    def segments_written(self) -> dict[int, int]:
        """Finished ``.m4s`` segments per representation (0..n-1 video rungs, n audio),
        the closed encoder runs' included."""
        folder = runs.run_dir(self.output_dir, self.run)
        counts = {rep: len(numbers) for rep, numbers in segment_files(folder).items()}
        if self._segments_before:  # a new run without segments yet still has the old ones
            counts = {rep: counts.get(rep, 0) for rep in range(len(self.renditions) + 1)}
        before = self._segments_before
        return {rep: before.get(rep, 0) + n for rep, n in sorted(counts.items())}

    def stats(self) -> dict[str, Any]:
        reorder = self._reorder.stats
        segments = self.segments_written()
        video_reps = range(len(self.renditions))
        return {
            "state": str(self.state),
            "reason": self.reason,
            "last_error": self.last_error,
            "pid": self.pid,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "renditions": [r.name for r in self.renditions],
            "bytes_in": self.counters.bytes_in,
            "bytes_written": self.counters.bytes_written,
            "chunks": reorder.accepted,
            "duplicates": reorder.duplicates,
            "reordered": reorder.reordered,
            "gaps": reorder.gaps,
            "missing_chunks": reorder.missing,
            "late_chunks": reorder.late,
            "rejected_chunks": self.counters.rejected,
            "resyncs": self.counters.resyncs,
            "dropped_bytes": self.counters.dropped_bytes,
            "backpressure": self.counters.backpressure,
            "queue_bytes": self._queue_bytes,
            "queue_chunks": len(self._queue),
            "queue_limit": self.config.max_queue_bytes,
            "held_bytes": self._reorder.held_bytes,
            "held_chunks": self._reorder.held_count,
            "segments": max((segments.get(i, 0) for i in video_reps), default=0),
            "encoder_run": self.run,
            "encoder_restarts": self.restarts,
            "segments_by_representation": segments,
            "source": "webrtc" if self._raw_source is not None else "chunks",
            **({"webrtc_input": self._raw.stats()} if self._raw is not None else {}),
        }

    async def __aenter__(self) -> StreamPipeline:
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            await self.stop()
        else:
            await self.abort(f"aborted: {exc_type.__name__}")

    # --- chunk processing --------------------------------------------------------------
    def _has_space(self, n: int) -> bool:
        return not self._queue or self._queue_bytes + n <= self.config.max_queue_bytes

    def _enqueue(self, data: bytes, received: int) -> None:
        self.counters.bytes_in += received
        if data:
            self._queue.append(data)
            self._queue_bytes += len(data)
            self._data_event.set()
            if self._header_buf is not None:
                self._capture_header(data)

    def _capture_header(self, data: bytes) -> None:
        """Keep the bytes before the first Cluster: a restarted encoder (or another
        process taking the stream over, from the copy on disk) needs them first."""
        assert self._header_buf is not None
        self._header_buf += data
        end = self._checker.header_bytes
        if end is None or len(self._header_buf) < end:
            if len(self._header_buf) > 2 * MAX_HEADER_ELEMENT + 4096:
                self._header_buf = None  # not a header a decoder could use: no restarts
            return
        self._header = bytes(self._header_buf[:end])
        self._header_buf = None
        self._keep_header()

    def _keep_header(self) -> None:
        """The header on disk, for a process taking the stream over; written once the
        source was accepted (``self.clock`` set: a refused one leaves nothing behind). A
        few KB, written like ``clock.json``."""
        if self._header is None or self.clock is None or self.config.resume:
            return
        try:
            runs.write_header(self.output_dir, self._header)
        except OSError as exc:  # the stream goes on; only a takeover would miss it
            logger.warning("%s: WebM header not saved: %s", self.name, exc)

    def _prime_from_disk(self) -> None:
        """Takeover: the checker is past the header (waiting for the next Cluster), and the
        header is the first thing the new encoder gets."""
        header = runs.read_header(self.output_dir)
        self._header_buf = None
        self._resume_first_chunk = True
        if header is None:
            return  # no header on disk: the first chunk is refused as not a WebM start
        try:
            self._checker.check(header)
        except WebMError:
            logger.warning("%s: the saved WebM header does not parse", self.name)
            return
        self._checker.resync()
        self._header = header
        self._enqueue(header, 0)

    async def _in_thread(self, func, *args, **kwargs) -> Any:
        """File work of the encoder runs, off the event loop; a failure is logged (the
        stream goes on with what FFmpeg wrote)."""
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except Exception:
            logger.exception("%s: %s failed", self.name, getattr(func, "__name__", func))
            return None

    async def _wait_for_space(self, n: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.closed:
            self._space_event.clear()
            if self._has_space(n):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._space_event.wait(), remaining)
            except TimeoutError:
                return

    def _task(self, coro) -> asyncio.Task:
        """Every task of the pipeline starts here: kept referenced until it is done."""
        task = asyncio.get_running_loop().create_task(coro, context=logctx.stream_context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _process(self, released: list[Released]) -> int:
        """Check and enqueue released chunks; a gap (or a refused chunk) → resync."""
        count = 0
        for item in released:
            if isinstance(item, Gap):
                self.last_error = (
                    f"chunks seq={item.first}..{item.last} missing ({item.reason}): skipped"
                )
                self._resync()
                continue
            assert isinstance(item, Chunk)
            try:
                forward = self._checker.check(item.data)
            except WebMError as exc:
                self.counters.rejected += 1
                self.last_error = f"chunk seq={item.seq} refused: {exc}"
                logger.warning(
                    "%s: %s (held chunk; treated as missing)", self.name, self.last_error
                )
                self._resync()
                continue
            dropped = len(item.data) - len(forward)
            if dropped > 0:
                self.counters.dropped_bytes += dropped
                logger.info(
                    "%s: seq=%d: %d bytes dropped while resynchronising",
                    self.name,
                    item.seq,
                    dropped,
                )
            self._enqueue(forward, len(item.data))
            count += 1
        return count

    def _resync(self) -> None:
        self.counters.resyncs += 1
        filler = self._checker.resync()
        if filler:
            self._enqueue(filler, 0)

    # --- FFmpeg process ----------------------------------------------------------------
    async def _ensure_started(self) -> None:
        if self._start_task is None:
            self._start_task = self._task(self._start())
        await asyncio.shield(self._start_task)

    async def _start(self) -> None:
        info = self.source_info
        assert info is not None and info.video is not None
        try:
            # Before anything is sized from the header (ladder, overlay buffers, FFmpeg).
            check_source(
                info,
                max_side=self.config.max_source_side,
                max_pixels=self.config.max_source_pixels,
            )
        except UnsupportedSource as exc:
            logger.warning("%s: %s", self.name, exc.reason)
            await self._finish(PipelineState.FAILED, exc.reason)
            raise StreamClosed(f"stream is {self.state}: {exc.reason}") from exc
        try:
            self.renditions = renditions_for_source(self.config.ladder, info.video.height)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if self.config.resume:
                # Another process ran it: its clock stands; close the runs it left.
                self.clock = read_clock(self.output_dir) or StreamClock(now_ms(), "server")
                self.run = await asyncio.to_thread(runs.next_run, self.output_dir)
                self._segments_before = await asyncio.to_thread(
                    runs.segments_closed, self.output_dir
                )
            else:
                if self.capture_ms is not None:
                    self.clock = StreamClock(self.capture_ms, "publisher")
                else:
                    self.clock = StreamClock(now_ms(), "server")
                write_clock(self.output_dir, self.clock)
                self._keep_header()
            mode = self.config.encoder.low_latency
            if mode is not None:  # the origin serves parts once this file is there
                await asyncio.to_thread(write_mode, self.output_dir, mode)
            await self._spawn_encoder()
        except StreamClosed:
            raise
        except Exception as exc:  # a bad setting, an unwritable folder, no binary
            self.failure_detail = f"could not start FFmpeg: {exc}"
            logger.error("%s: %s", self.name, self.failure_detail)
            await self._finish(PipelineState.FAILED, ENCODER_NOT_STARTED)
            raise StreamClosed(f"stream is {self.state}: {self.reason}") from exc
        if self.started_at is None:  # a resumed stream keeps its start
            self.started_at = datetime.now(UTC)
        self._set_state(PipelineState.LIVE)

    async def _spawn_encoder(self) -> None:
        """Start the FFmpeg of run ``self.run`` (run 0 writes in the stream's folder, run k
        in ``run<k>/`` with its own clock: its media time 0 is now), with its tasks."""
        info = self.source_info
        assert info is not None and info.video is not None and self.clock is not None
        folder = runs.run_dir(self.output_dir, self.run)
        clock = self.clock
        if self.run:
            clock = StreamClock(now_ms(), self.clock.source)
            await asyncio.to_thread(write_clock, folder, clock)
        options = self.config.encoder
        if options.availability_start_ms is None:
            options = dataclasses.replace(options, availability_start_ms=clock.capture_ms)
        plan = None
        if self.config.face_overlay or self._raw_source is not None:
            from streaming.overlay import OverlayPlan

            # Raw frames on stdin, PCM on a pipe: from FFmpeg #1 (the chunk-ingest face
            # overlay, streaming/overlay.py) or from the WebRTC publisher (``self._raw``).
            plan = OverlayPlan.for_source(
                info.video.width,
                info.video.height,
                self.config.encoder.fps,
                info.audio is not None,
                limits=self.config.limits,
                low_delay=options.low_latency is not None,
            )
        if plan is not None and self._raw_source is not None:
            plan = dataclasses.replace(plan, raw=dataclasses.replace(plan.raw, audio_format="nut"))
        extra: dict[str, Any] = {}
        webrtc_fd = self.webrtc_feed.open() if self.webrtc_feed is not None else None
        if webrtc_fd is not None:
            extra["webrtc_fd"] = webrtc_fd
        self.command = build_command(
            folder,
            self.renditions,
            has_audio=info.audio is not None,
            options=options,
            binary=self.binary or ffmpeg_binary(),
            raw_input=plan.raw if plan else None,
            **extra,
        )
        logger.info(
            "%s: starting FFmpeg (run %d) for %s %sx%s (%s) → %s",
            self.name,
            self.run,
            info.video.codec,
            info.video.width,
            info.video.height,
            ", ".join(r.name for r in self.renditions),
            folder,
        )
        extra_fds = (webrtc_fd,) if webrtc_fd is not None else ()
        try:
            if plan is not None and self._raw_source is None:
                self.process = await plan.start(self.command[0], self.command, extra_fds=extra_fds)
            else:
                audio_fd = plan.raw.audio_fd if plan is not None else None
                try:
                    self.process = await spawn(
                        self.command,
                        self.config.limits,
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.PIPE,
                        pass_fds=(*extra_fds, *((audio_fd,) if audio_fd is not None else ())),
                    )
                except BaseException:
                    if plan is not None and plan.audio_write_fd is not None:
                        os.close(plan.audio_write_fd)
                    raise
                finally:
                    if audio_fd is not None:
                        os.close(audio_fd)  # FFmpeg holds the read end now
                if plan is not None:
                    try:
                        # media time 0 is the run's clock, not the moment FFmpeg got
                        # started: the readouts measure from it (first slots repeat)
                        origin = time.monotonic() - (now_ms() - clock.capture_ms) / 1000
                        await self._attach_raw(
                            plan.raw.width, plan.raw.height, plan.audio_write_fd, origin
                        )
                    except BaseException:
                        await self._kill_process()  # no monitor reaps it yet
                        raise
        finally:
            if webrtc_fd is not None:
                os.close(webrtc_fd)  # FFmpeg holds the write end: EOF reaches the feed with it
        self._writer_task = self._task(self._writer())
        self._stderr_task = self._task(self._read_stderr())
        self._monitor = self._task(self._watch())

    async def _attach_raw(
        self, width: int, height: int, audio_fd: int | None, origin: float
    ) -> None:
        """The WebRTC publisher's frames go to this run: the feed is made once (with the
        face tracker if the stream has the overlay), its schedule restarts every run."""
        if self._raw is None:
            tracker = None
            if self.config.face_overlay:
                from faces.boxes import FaceTracker

                tracker = FaceTracker(detect_fps=0)
            fps = self.config.encoder.fps
            self._raw = RawFeed(width, height, fps, self._enqueue_raw, tracker=tracker)
            self._task(self._raw_schedule())
        await self._raw.attach(audio_fd, origin)

    def _enqueue_raw(self, frame: bytes) -> bool:
        """One raw frame for FFmpeg's stdin; False when the queue is full (the slot is
        deferred: ``rawpace``). Room for at least 8 frames whatever the byte limit."""
        limit = max(self.config.max_queue_bytes, 8 * len(frame))
        if self._queue and self._queue_bytes + len(frame) > limit:
            self.counters.backpressure += 1
            return False
        self._enqueue(frame, len(frame))
        return True

    async def _raw_schedule(self) -> None:
        """Write the WebRTC publisher's frames on the stream's frame schedule."""
        raw = self._raw
        assert raw is not None
        idle = 1 / self.config.encoder.fps
        while not self.closed and not self._closing:
            next_at = raw.tick(time.monotonic()) if self.state == PipelineState.LIVE else None
            delay = idle if next_at is None else next_at - time.monotonic()
            await asyncio.sleep(max(0.0, delay))

    async def _writer(self) -> None:
        proc = self.process
        assert proc is not None and proc.stdin is not None
        try:
            while True:
                while not self._queue:
                    if self._closing:
                        proc.stdin.close()  # EOF: FFmpeg flushes and finalises the outputs
                        await proc.stdin.wait_closed()
                        return
                    self._data_event.clear()
                    await self._data_event.wait()
                data = self._queue[0]
                proc.stdin.write(data)
                await proc.stdin.drain()
                self._queue.popleft()
                self._queue_bytes -= len(data)
                self.counters.bytes_written += len(data)
                self._space_event.set()
        except (BrokenPipeError, ConnectionResetError):
            logger.info("%s: FFmpeg's stdin is closed", self.name)

    async def _read_stderr(self) -> None:
        proc = self.process
        assert proc is not None and proc.stderr is not None
        partial = b""
        while True:
            block = await proc.stderr.read(4096)
            if not block:
                break
            lines = (partial + block).split(b"\n")
            partial = lines.pop()[-MAX_STDERR_LINE:]
            for line in lines:
                self._stderr_line(line)
        if partial:
            self._stderr_line(partial)

    def _stderr_line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if text:
            self.counters.stderr_lines += 1
            self.stderr_tail.append(text[:MAX_STDERR_LINE])
            logger.debug("%s: ffmpeg: %s", self.name, text)

    async def _watch(self) -> None:
        proc = self.process
        assert proc is not None
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            await self._kill_process()
            raise
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._stderr_task, 5)
        self._exited(code)
        killed = -code in RESTART_SIGNALS and self.state == PipelineState.LIVE and not self._closing
        restartable = self._header is not None or self._raw is not None
        if killed and restartable and self.restarts < self.config.max_restarts:
            await self._restart(f"FFmpeg killed by signal {-code}")
            return
        state, reason = PipelineState.FAILED, None  # if killed, the kill's reason stands
        if self.state == PipelineState.STOPPING and code == 0:
            try:
                await self._write_vod()
            except Exception as exc:  # the live outputs stay as FFmpeg wrote them
                logger.warning("%s: VOD playlists not rewritten: %s", self.name, exc)
                self.last_error = f"VOD playlists not rewritten: {exc}"
            state = PipelineState.ENDED
        elif not self.closed:
            tail = " | ".join(self.stderr_tail) or "(no output)"
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            when = "while finishing" if self.state == PipelineState.STOPPING else "unexpectedly"
            limit = self.config.limits.memory_mb
            bound = f" (memory limit {limit} MiB)" if limit else ""
            self.failure_detail = f"FFmpeg {how} {when}{bound}: {tail}"
            reason = ENCODER_FAILED
            if killed and self.restarts:
                reason = ENCODER_KEPT_FAILING.format(restarts=self.restarts)
            logger.error("%s: %s", self.name, self.failure_detail)
            if self.run:  # what the runs left stays watchable: VOD outputs from the disk
                with contextlib.suppress(Exception):
                    await self._write_vod()
        await self._finish(state, reason)

    def _exited(self, code: int) -> None:
        """Every FFmpeg exit (of any run) passes here once: the place to count them."""
        self.exits.append(code)
        metrics.FFMPEG_EXITS.labels(metrics.exit_outcome(code)).inc()
        logger.info("%s: FFmpeg (run %d) exited with %d", self.name, self.run, code)

    async def _restart(self, how: str) -> None:
        """A killed encoder is replaced: the new one gets the WebM header, then the stream
        from its next Cluster (what was queued for the dead one is dropped: it may start
        mid-frame), and writes run ``self.run + 1``; the playlists go on with a
        discontinuity (streaming/runs.py)."""
        self.restarts += 1  # the one place a restart is counted
        metrics.FFMPEG_RESTARTS.inc()
        logger.warning(
            "%s: %s; restarting it (%d of %d)",
            self.name,
            how,
            self.restarts,
            self.config.max_restarts,
        )
        if self._writer_task is not None and not self._writer_task.done():
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer_task
        self.counters.dropped_bytes += self._queue_bytes
        self._queue.clear()
        self._queue_bytes = 0
        if self._raw is not None:  # raw frames need no header; the next run re-attaches
            self._raw.detach()
        else:
            self._checker.resync()  # the next bytes forwarded start a Cluster
            assert self._header is not None
            self._enqueue(self._header, 0)
        self._space_event.set()
        await self._settle_stitcher()
        await self._in_thread(runs.close_run, self.output_dir, self.run)
        self._segments_before = await asyncio.to_thread(runs.segments_closed, self.output_dir)
        if self.closed:
            return
        self.run += 1
        self._stitched_mtime = None
        try:
            await self._spawn_encoder()
        except Exception as exc:
            self.failure_detail = f"could not restart FFmpeg: {exc}"
            logger.error("%s: %s", self.name, self.failure_detail)
            await self._finish(PipelineState.FAILED, ENCODER_NOT_STARTED)
            return
        if self.closed:  # aborted while it started: nobody else will stop this one
            await self._kill_process()

    async def _settle_stitcher(self) -> None:
        if self._stitcher is not None and not self._stitcher.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._stitcher)

    async def _write_vod(self) -> None:
        """The stream is over: list every segment (one run: ``finalize_vod``; several: the
        stitched VOD outputs)."""
        self._final = True
        await self._settle_stitcher()
        if self.run == 0 and not runs.load_runs(self.output_dir):
            await asyncio.to_thread(finalize_vod, self.output_dir)
        else:
            await asyncio.to_thread(runs.finish, self.output_dir, self.run)

    def _stitch_if_due(self) -> None:
        """While run k > 0 is live: the top-level playlists follow its manifest."""
        if self._final or (self._stitcher is not None and not self._stitcher.done()):
            return
        manifest = runs.run_dir(self.output_dir, self.run) / "manifest.mpd"
        try:
            mtime = os.stat(manifest).st_mtime_ns
        except OSError:
            return
        if mtime != self._stitched_mtime:
            self._stitched_mtime = mtime
            window = self.config.encoder.window_segments
            self._stitcher = self._task(
                self._in_thread(runs.stitch, self.output_dir, self.run, window=window)
            )

    async def _kill(self, reason: str) -> None:
        """Fail now (before the kill, so FFmpeg's exit is not taken as the reason), kill
        FFmpeg and wait until the monitor has reaped it."""
        self._close(PipelineState.FAILED, reason)
        await self._kill_process()
        if self._monitor is not None and not self._monitor.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(self._monitor)
        await self._finish(PipelineState.FAILED)

    async def _kill_process(self) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # the overlay's kill() ends both of its FFmpegs
        # Always reap: a killed child that is never waited for stays a zombie.
        await asyncio.shield(proc.wait())

    def _close(self, state: PipelineState, reason: str | None = None) -> None:
        """The one transition into ``ended`` or ``failed`` (the first one stands)."""
        if self.closed:
            return
        if reason is not None:
            self.reason = reason
        self._set_state(state)

    async def _finish(self, state: PipelineState, reason: str | None = None) -> None:
        """Close (see ``_close``), then release: stop the writer and the timers, free the
        queue, wake whoever waits for space or for the end. Safe to repeat."""
        self._close(state, reason)
        self._closing = True
        self._data_event.set()
        self._space_event.set()
        await self._cleanup_tasks()
        if self._raw is not None:
            self._raw.close()
        if self.webrtc_feed is not None:
            self.webrtc_feed.close()  # its viewers see the end
        self._queue.clear()  # nothing will read it any more: free the memory
        self._queue_bytes = 0
        self._finished.set()

    async def _cleanup_tasks(self) -> None:
        current = asyncio.current_task()
        for task in [self._ticker, self._writer_task]:
            if task is not None and task is not current and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # --- housekeeping ------------------------------------------------------------------
    async def _tick(self) -> None:
        """Gap timer (skip missing chunks) and idle timer (end abandoned streams)."""
        while True:
            await asyncio.sleep(self.config.tick)
            now = time.monotonic()
            if self.state == PipelineState.LIVE:
                released = self._reorder.poll(now)
                if released:
                    self._process(released)
            if self.run and self.state in (PipelineState.LIVE, PipelineState.STOPPING):
                self._stitch_if_due()
            idle = self.config.idle_timeout
            if idle and self.state in (PipelineState.IDLE, PipelineState.LIVE):
                limit = (
                    idle
                    if self.state == PipelineState.LIVE
                    else max(idle, self.config.start_timeout)
                )
                if now - self._last_chunk_at > limit:
                    logger.info("%s: no chunk for %.0f s: ending the stream", self.name, limit)
                    self._task(self.stop(f"idle: no data for {limit:g} s"))
                    return

    def _set_state(self, state: PipelineState) -> None:
        if state == self.state:
            return
        self.state = state
        if state in (PipelineState.ENDED, PipelineState.FAILED):
            self.ended_at = datetime.now(UTC)
        logger.info("%s: %s%s", self.name, state, f" ({self.reason})" if self.reason else "")
        if self._on_state is not None:
            try:
                self._on_state(self)
            except Exception:
                logger.exception("%s: on_state callback failed", self.name)
