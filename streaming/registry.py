"""The streams running in this process: one ``LiveStream`` per slug, on this event loop.

A stream's pipeline lives in the process that received its first chunk; with several
Daphne processes every request of one stream's ingest must reach that process
(docs/deploy.md: hash on the slug). That process holds a lease on the stream's row while
the stream is live (``streaming.status``); if it dies, another process takes the stream
over (``start(..., resume=True)``). Registering and removing never await, so they are
atomic on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from typing import Any

from django.conf import settings
from django.urls import reverse

from rtcsite.process import PROCESS_ID
from rtcsite.ratelimit import TokenBucket
from streaming import limits, status
from streaming.ffmpeg import EncoderOptions
from streaming.models import Stream, StreamStatus
from streaming.pipeline import PipelineConfig, PipelineState, StreamPipeline
from streaming.services import announce_status

logger = logging.getLogger(__name__)

_running: dict[str, LiveStream] = {}


class LiveStream:
    """A stream published to this process: its pipeline, its chunk rate limit, and what a
    state change does (the row saved, viewers and lobbies told, unregistered once closed)."""

    def __init__(
        self,
        stream: Stream,
        address: str = "",
        *,
        resume: bool = False,
        idle_timeout: float | None = None,
    ):
        self.stream_id = stream.pk
        self.slug = stream.slug
        self.owner_id = stream.owner_id
        self.address = address  # the publisher's, as the live-stream caps count it
        self.ending = False  # over its duration or disk budget: being stopped
        self.disk_checked = 0.0  # monotonic time of the last walk of its folder
        rate = settings.STREAM_RATE_LIMIT
        self.bucket = TokenBucket(rate, max(1, int(rate * 2)))
        self.stopped_by_publisher = False
        # The WebRTC (WHIP) session publishing it, once one has claimed it
        # (``ingest.go_live_raw``): a second publisher is refused while it is set.
        self.publisher: Any = None
        self.lost = False  # another process took the stream over: this one writes nothing
        self._lease: asyncio.Task | None = None
        self.last_saved = 0.0
        self._tasks: set[asyncio.Task] = set()
        self._save_lock = asyncio.Lock()  # rows written in the order of the changes
        # dash.js syncs its clock to this server (the MPD's UTCTiming) for the live edge.
        # The stream's mode (chosen at creation) picks the segment and part durations.
        encoder = EncoderOptions.from_settings(
            low_latency=stream.low_latency, utc_timing_url=reverse("streaming:time")
        )
        overrides: dict[str, Any] = {}
        if idle_timeout is not None:
            overrides["idle_timeout"] = idle_timeout or None
        config = PipelineConfig.from_settings(
            encoder=encoder, face_overlay=stream.face_overlay, resume=resume, **overrides
        )
        self.pipeline = StreamPipeline(
            stream.media_dir(), config, name=f"stream {stream.slug}", on_state=self._changed
        )
        if resume:
            self.pipeline.started_at = stream.started_at  # duration caps count from there

    def save_progress_if_due(self) -> None:
        """While live, save the counters every ``PROGRESS_SAVE_INTERVAL`` seconds, and end
        the stream if it is over its duration or disk budget (``streaming.limits``)."""
        due = time.monotonic() - self.last_saved > status.PROGRESS_SAVE_INTERVAL
        if due and not self.pipeline.closed:
            self.last_saved = time.monotonic()
            self._spawn(self._save())
            if not self.ending:
                self._spawn(self._check_budget())

    async def _check_budget(self) -> None:
        """Stop cleanly (FFmpeg finalises the VOD) with the reason, once over budget."""
        reason = limits.over_duration(self.pipeline.started_at)
        # The folder walk grows with the stream (hours of segments): not every progress save.
        disk_due = time.monotonic() - self.disk_checked >= settings.STREAM_DISK_CHECK_INTERVAL
        if not reason and settings.STREAM_MAX_DISK_MB and disk_due:
            self.disk_checked = time.monotonic()
            used = await asyncio.to_thread(limits.folder_bytes, self.pipeline.output_dir)
            reason = limits.over_disk(used)
        if reason and not self.ending and not self.pipeline.closed:
            self.ending = True
            logger.info("stream %s: %s", self.slug, reason)
            await self.pipeline.stop(reason)

    async def stop(self, reason: str) -> PipelineState:
        """The publisher ends the stream: FFmpeg finalises, the row is saved at once."""
        self.stopped_by_publisher = True
        state = await self.pipeline.stop(reason)
        await self._save()
        discard(self)
        return state

    def _changed(self, pipeline: StreamPipeline) -> None:
        if self.lost:
            return
        if pipeline.state == PipelineState.LIVE and self._lease is None:
            self._lease = asyncio.get_running_loop().create_task(self._hold_lease())
            self._tasks.add(self._lease)
            self._lease.add_done_callback(self._tasks.discard)
        self._spawn(self._record(pipeline.state, pipeline.reason))

    async def _hold_lease(self) -> None:
        """Renew the lease every third of ``STREAM_OWNER_LEASE`` while the pipeline runs,
        chunks or not. Lost to another process (this one froze past the lease and was
        taken over): stop the encoder at once and write nothing more; the stream is theirs.
        """
        period = settings.STREAM_OWNER_LEASE / 3
        while not self.pipeline.closed:
            await asyncio.sleep(period)
            if self.pipeline.closed:
                return
            try:
                held = await status.renew_lease(self.stream_id)
            except Exception:  # the database is away: try again next time
                logger.exception("stream %s: could not renew its lease", self.slug)
                continue
            if held is False:
                await self._lose()
                return

    async def _lose(self) -> None:
        """Another process took the stream over: stop the encoder, write nothing more."""
        if self.lost:
            return
        logger.warning("stream %s: taken over by another process; stopping", self.slug)
        self.lost = True
        discard(self)
        await self.pipeline.abort("taken over by another process")

    async def _record(self, state: PipelineState, reason: str) -> None:
        if self.lost:
            return
        values = await self._save()
        if self.pipeline.closed:
            discard(self)
        new_status = values.get("status")
        if new_status and state != PipelineState.STOPPING:  # still live while stopping
            await announce_status(self.slug, str(new_status), reason)

    async def _save(self) -> dict[str, Any]:
        if self.lost:
            return {}
        async with self._save_lock:
            values = status.row_values(
                self.pipeline, stopped_by_publisher=self.stopped_by_publisher
            )
            self.last_saved = time.monotonic()
            try:
                saved = await status.save_owned(self.stream_id, values)
            except Exception:
                logger.exception("stream %s: could not save its status", self.slug)
                return values
            if not saved:
                self._spawn(self._lose())
                return {}
            return values

    def _spawn(self, coro) -> None:
        """Every task of a live stream starts here: kept referenced until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def get(slug: str) -> LiveStream | None:
    return _running.get(slug)


def entries() -> list[limits.LiveEntry]:
    """This process's streams that have not closed, as the live-stream caps count them."""
    return [
        limits.LiveEntry(live.slug, live.owner_id, live.address)
        for live in _running.values()
        if not live.pipeline.closed
    ]


def start(
    stream: Stream,
    address: str = "",
    *,
    resume: bool = False,
    idle_timeout: float | None = None,
) -> LiveStream:
    """Register a new live stream for ``stream``, its folder cleared of refused attempts;
    ``resume``: continue the stream a dead process was running (its folder kept);
    ``idle_timeout``: seconds without input before it ends (else the setting; 0: never)."""
    output = stream.media_dir()
    if stream.status == StreamStatus.IDLE and output.exists() and not resume:
        shutil.rmtree(output, ignore_errors=True)  # refused attempts never produce media
    live = LiveStream(stream, address, resume=resume, idle_timeout=idle_timeout)
    _running[stream.slug] = live
    what = "taken over" if resume else "created"
    logger.info("stream %s: pipeline %s in %s", stream.slug, what, PROCESS_ID)
    return live


def discard(live: LiveStream) -> None:
    """Forget ``live`` (if it is still the one registered for its slug)."""
    if _running.get(live.slug) is live:
        del _running[live.slug]
