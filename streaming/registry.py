"""The streams running in this process: one ``LiveStream`` per slug, on this event loop.

A stream's pipeline lives in the process that received its first chunk; with several
Daphne processes every request of one stream's ingest must reach that process
(docs/deploy.md: hash on the slug). Registering and removing never await, so they are
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

    def __init__(self, stream: Stream, address: str = ""):
        self.stream_id = stream.pk
        self.slug = stream.slug
        self.owner_id = stream.owner_id
        self.address = address  # the publisher's, as the live-stream caps count it
        self.ending = False  # over its duration or disk budget: being stopped
        self.disk_checked = 0.0  # monotonic time of the last walk of its folder
        rate = settings.STREAM_RATE_LIMIT
        self.bucket = TokenBucket(rate, max(1, int(rate * 2)))
        self.stopped_by_publisher = False
        self.last_saved = 0.0
        self._tasks: set[asyncio.Task] = set()
        self._save_lock = asyncio.Lock()  # rows written in the order of the changes
        # dash.js syncs its clock to this server (the MPD's UTCTiming) for the live edge.
        encoder = EncoderOptions.from_settings(utc_timing_url=reverse("streaming:time"))
        config = PipelineConfig.from_settings(encoder=encoder, face_overlay=stream.face_overlay)
        self.pipeline = StreamPipeline(
            stream.media_dir(), config, name=f"stream {stream.slug}", on_state=self._changed
        )

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
        self._spawn(self._record(pipeline.state, pipeline.reason))

    async def _record(self, state: PipelineState, reason: str) -> None:
        values = await self._save()
        if self.pipeline.closed:
            discard(self)
        new_status = values.get("status")
        if new_status and state != PipelineState.STOPPING:  # still live while stopping
            await announce_status(self.slug, str(new_status), reason)

    async def _save(self) -> dict[str, Any]:
        async with self._save_lock:
            values = status.row_values(
                self.pipeline, stopped_by_publisher=self.stopped_by_publisher
            )
            self.last_saved = time.monotonic()
            try:
                await status.save(self.stream_id, values)
            except Exception:
                logger.exception("stream %s: could not save its status", self.slug)
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


def start(stream: Stream, address: str = "") -> LiveStream:
    """Register a new live stream for ``stream``, its folder cleared of refused attempts."""
    output = stream.media_dir()
    if stream.status == StreamStatus.IDLE and output.exists():
        shutil.rmtree(output, ignore_errors=True)  # refused attempts never produce media
    live = LiveStream(stream, address)
    _running[stream.slug] = live
    logger.info("stream %s: pipeline created in %s", stream.slug, PROCESS_ID)
    return live


def discard(live: LiveStream) -> None:
    """Forget ``live`` (if it is still the one registered for its slug)."""
    if _running.get(live.slug) is live:
        del _running[live.slug]
