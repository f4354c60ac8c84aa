"""Stream lifecycle: create (publish key shown once), ingest chunks, stop, status.

Views and the WebSocket ingest consumer call these. A stream's ``StreamPipeline`` lives
in the process (and on the event loop) that received its first chunk, in a per-process
registry keyed by slug; the model row records which process (``worker``) and is kept up
to date from the pipeline's ``on_state`` callback and, while live, every
``PROGRESS_SAVE_INTERVAL`` seconds. With several Daphne processes, every request of one
stream's ingest must reach the same process (docs/deploy.md: hash on the slug); another
process answers ``wrong-process``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, close_old_connections, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.text import slugify

from identity.services import Identity
from presence import services as presence
from rtcsite.errors import Busy, ClientError, Conflict, Forbidden, NotFound, RateLimited
from rtcsite.process import PROCESS_ID
from rtcsite.ratelimit import TokenBucket
from streaming.clock import ClockError, check_capture_ms, read_clock
from streaming.ffmpeg import EncoderOptions
from streaming.models import Stream, StreamStatus, new_publish_key
from streaming.pipeline import (
    Backpressure,
    InvalidChunk,
    PipelineConfig,
    PipelineState,
    StreamClosed,
    StreamPipeline,
)

logger = logging.getLogger(__name__)

MAX_TITLE_LENGTH = 80
PROGRESS_SAVE_INTERVAL = 2.0  # seconds between progress writes to the model while live


# --- settings ----------------------------------------------------------------------------
def max_chunk_bytes() -> int:
    return int(getattr(settings, "STREAM_MAX_CHUNK_BYTES", 4 << 20))


def feed_wait() -> float:
    return float(getattr(settings, "STREAM_FEED_WAIT", 2.0))


def rate_limit() -> tuple[float, int]:
    rate = float(getattr(settings, "STREAM_RATE_LIMIT", 20.0))
    return rate, max(1, int(rate * 2))


# --- creation and keys -------------------------------------------------------------------
def clean_title(raw: str) -> str:
    title = " ".join((raw or "").split())
    if not title:
        raise ValidationError("Give the stream a title.", code="required")
    if len(title) > MAX_TITLE_LENGTH:
        raise ValidationError(
            f"Titles are limited to {MAX_TITLE_LENGTH} characters.", code="max_length"
        )
    return title


def _new_slug(title: str) -> str:
    base = slugify(title)[:40].strip("-") or "stream"
    return f"{base}-{get_random_string(6, 'abcdefghijklmnopqrstuvwxyz0123456789')}"


def create_stream(
    title: str, owner: Identity | None, *, face_overlay: bool = False
) -> tuple[Stream, str]:
    """A new idle stream and its publish key: the key is returned here once, never stored."""
    title = clean_title(title)
    key = new_publish_key()
    for _attempt in range(5):
        stream = Stream(
            slug=_new_slug(title),
            title=title,
            owner_id=owner.id if owner else "",
            owner_name=owner.name if owner else "",
            face_overlay=face_overlay,
        )
        stream.set_publish_key(key)
        stream.full_clean()
        try:
            with transaction.atomic():
                stream.save()
        except IntegrityError:  # slug collision (1 in 2 billion): pick another
            continue
        shutil.rmtree(stream.media_dir(), ignore_errors=True)  # leftovers of a deleted stream
        return stream, key
    raise RuntimeError("could not find a free stream slug")


def rotate_publish_key(stream: Stream) -> str:
    """Replace the publish key; the old one stops working at the next chunk. Returns it once."""
    key = new_publish_key()
    stream.set_publish_key(key)
    stream.save(update_fields=["publish_key_hash", "updated_at"])
    return key


def list_streams(limit: int = 50) -> list[Stream]:
    """For the lobby: live first, then idle, then recent ended ones whose files remain."""
    order = {StreamStatus.LIVE: 0, StreamStatus.IDLE: 1, StreamStatus.ENDED: 2}
    streams = list(
        Stream.objects.filter(
            status__in=[StreamStatus.LIVE, StreamStatus.IDLE, StreamStatus.ENDED],
            files_purged_at__isnull=True,
        )[: limit * 2]
    )
    streams.sort(key=lambda s: (order[s.status], -s.created_at.timestamp()))
    return streams[:limit]


def get_stream(slug: str) -> Stream | None:
    return Stream.objects.filter(slug=slug).first()


# --- the per-process registry ------------------------------------------------------------
@dataclass
class Running:
    stream_id: int
    slug: str
    pipeline: StreamPipeline
    bucket: TokenBucket
    last_saved: float = 0.0
    stopped_by_publisher: bool = False
    tasks: set[asyncio.Task] = field(default_factory=set)


_running: dict[str, Running] = {}


def running(slug: str) -> Running | None:
    return _running.get(slug)


def running_slugs() -> list[str]:
    return list(_running)


def _fields_from_pipeline(entry: Running) -> dict[str, Any]:
    pipeline = entry.pipeline
    stats = pipeline.stats()
    values: dict[str, Any] = {
        "bytes_received": stats["bytes_in"],
        "chunks_received": stats["chunks"],
        "segments_written": stats["segments"],
        "updated_at": timezone.now(),
    }
    if pipeline.renditions:
        values["renditions"] = [r.name for r in pipeline.renditions]
    state = pipeline.state
    if state in (PipelineState.LIVE, PipelineState.STOPPING):
        values.update(status=StreamStatus.LIVE, worker=PROCESS_ID)
        if pipeline.started_at:
            values["started_at"] = pipeline.started_at
    elif state == PipelineState.ENDED:
        values.update(status=StreamStatus.ENDED, ended_at=pipeline.ended_at, reason=pipeline.reason)
    elif state == PipelineState.FAILED:
        values.update(
            status=StreamStatus.FAILED, ended_at=pipeline.ended_at, reason=pipeline.reason[:4000]
        )
    return values


def _save_sync(stream_id: int, values: dict[str, Any]) -> None:
    try:
        Stream.objects.filter(pk=stream_id).update(**values)
    finally:
        close_old_connections()


# Not thread-sensitive: these writes run from pipeline tasks that outlive the request (or
# socket) that started them, whose thread-sensitive executor is gone by then.
_save = sync_to_async(_save_sync, thread_sensitive=False)


async def _persist(entry: Running) -> None:
    pipeline = entry.pipeline
    if pipeline.closed and pipeline.started_at is None:
        # Never went live (only refused chunks so far). Stopped by its publisher: ended;
        # abandoned (idle timeout): it stays idle and may be published again.
        if entry.stopped_by_publisher:
            values = {"status": StreamStatus.ENDED, "ended_at": timezone.now(), "reason": "stopped"}
        else:
            values = {"status": StreamStatus.IDLE, "worker": ""}
        await _save(entry.stream_id, values)
        return
    entry.last_saved = time.monotonic()
    try:
        await _save(entry.stream_id, _fields_from_pipeline(entry))
    except Exception:
        logger.exception("stream %s: could not save its status", entry.slug)


def _on_state(entry_holder: list[Running]):
    async def on_state(pipeline: StreamPipeline) -> None:
        entry = entry_holder[0]
        await _persist(entry)
        if pipeline.closed and _running.get(entry.slug) is entry:
            del _running[entry.slug]
        if pipeline.closed and pipeline.started_at is None:
            status = StreamStatus.ENDED if entry.stopped_by_publisher else StreamStatus.IDLE
        else:
            status = _fields_from_pipeline(entry).get("status")
        if status and pipeline.state != PipelineState.STOPPING:  # still live while stopping
            await announce_status(entry.slug, str(status), pipeline.reason)

    return on_state


def _spawn(entry: Running, coro) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    entry.tasks.add(task)
    task.add_done_callback(entry.tasks.discard)


# --- ingest ------------------------------------------------------------------------------
@sync_to_async
def _authenticate(slug: str, key: str | None) -> Stream:
    stream = get_stream(slug)
    if stream is None:
        raise NotFound("No such stream.")
    if not key:
        raise ClientError("This stream needs its publish key.", code="key-missing", status=401)
    if not stream.check_publish_key(key):
        raise Forbidden("Wrong publish key for this stream.", code="bad-key")
    return stream


async def authenticate(slug: str, key: str | None) -> Stream:
    """The stream if ``key`` is its publish key; else ``NotFound`` (404), ``key-missing``
    (401) or ``bad-key`` (403)."""
    return await _authenticate(slug, key)


def _start(stream: Stream) -> Running:
    """Register a new pipeline for ``stream`` (no await: atomic on the event loop)."""
    output = stream.media_dir()
    if stream.status == StreamStatus.IDLE and output.exists():
        shutil.rmtree(output, ignore_errors=True)  # refused attempts never produce media
    holder: list[Running] = []
    # dash.js syncs its clock to this server (the MPD's UTCTiming) to compute the live edge.
    encoder = EncoderOptions.from_settings(utc_timing_url=reverse("streaming:time"))
    pipeline = StreamPipeline(
        output,
        PipelineConfig.from_settings(encoder=encoder),
        name=f"stream {stream.slug}",
        on_state=None,
    )
    pipeline.face_overlay = stream.face_overlay  # streaming/overlay.py
    rate, burst = rate_limit()
    entry = Running(stream.pk, stream.slug, pipeline, TokenBucket(rate, burst))
    holder.append(entry)
    pipeline.on_state = _on_state(holder)
    _running[stream.slug] = entry
    logger.info("stream %s: pipeline created in %s", stream.slug, PROCESS_ID)
    return entry


def _entry_for(stream: Stream) -> Running:
    entry = _running.get(stream.slug)
    if entry is not None:
        if entry.pipeline.closed:  # ended a moment ago; its status write may be pending
            reason = entry.pipeline.reason
            raise Conflict(f"This stream has {entry.pipeline.state}: {reason}.", code="closed")
        return entry
    if not stream.accepts_chunks:
        raise Conflict(
            f"This stream has {stream.status}"
            + (f": {stream.reason}" if stream.reason else "")
            + ". Create a new stream to go live again.",
            code="closed",
        )
    if stream.status == StreamStatus.LIVE:
        if stream.worker and stream.worker != PROCESS_ID:
            raise Conflict(
                f"This stream is running in another server process ({stream.worker}); "
                "ingest for one stream must always reach the same process.",
                code="wrong-process",
            )
        # Live in this process but no pipeline any more: it just closed. Never restart an
        # encode into a folder that already holds this stream's segments.
        raise Conflict("This stream's pipeline has closed. Create a new stream.", code="closed")
    return _start(stream)


async def feed_chunk(
    slug: str,
    key: str | None,
    seq: Any,
    data: bytes,
    *,
    stream: Stream | None = None,
    capture_ms: Any = None,
) -> dict[str, Any]:
    """Authenticate, rate-limit and feed one chunk; returns the publisher's status reply.

    ``stream``: already authenticated with ``key`` by the caller in this request.
    ``capture_ms``: the publisher's capture clock (epoch ms of media time 0, synced with
    ``/streams/time/``), sent with the first chunk; it anchors the HLS/DASH timelines
    (streaming/clock.py). Ignored once the encoder runs.
    """
    if stream is None or stream.slug != slug:
        stream = await authenticate(slug, key)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or seq > 2**31:
        raise ClientError("'seq' must be an integer >= 0.", code="invalid")
    limit = max_chunk_bytes()
    if len(data) > limit:
        raise ClientError(
            f"Chunk of {len(data)} bytes is over the limit of {limit} bytes.",
            code="too-large",
            status=413,
        )
    if not data:
        raise ClientError(f"Chunk seq={seq} is empty.", code="invalid")
    entry = _entry_for(stream)
    if not entry.bucket.take():
        raise RateLimited("Too many chunks for this stream; slow down.")
    pipeline = entry.pipeline
    if capture_ms is not None and pipeline.state == PipelineState.IDLE:
        try:
            pipeline.capture_ms = check_capture_ms(capture_ms)
        except ClockError as exc:
            raise ClientError(str(exc), code="invalid", seq=seq) from exc
    try:
        result = await pipeline.feed(seq, data, wait=feed_wait())
    except Backpressure as exc:
        raise Busy(str(exc), queue_bytes=exc.queue_bytes) from exc
    except InvalidChunk as exc:
        raise ClientError(str(exc), code="invalid", seq=seq) from exc
    except StreamClosed as exc:
        raise Conflict(str(exc), code="closed") from exc
    if time.monotonic() - entry.last_saved > PROGRESS_SAVE_INTERVAL and not pipeline.closed:
        entry.last_saved = time.monotonic()
        _spawn(entry, _persist(entry))
    return {
        "status": result.status,
        "seq": seq,
        "state": str(pipeline.state),
        "queue_bytes": pipeline.queue_bytes,
        "queue_limit": pipeline.config.max_queue_bytes,
        "segments": pipeline.stats()["segments"],
        "last_error": pipeline.last_error,
    }


async def stop_stream(slug: str, key: str | None) -> dict[str, Any]:
    """End the stream: FFmpeg finalises the playlists (``#EXT-X-ENDLIST``, static MPD)."""
    stream = await authenticate(slug, key)
    entry = _running.get(stream.slug)
    if entry is None:
        if stream.status == StreamStatus.IDLE:
            await _save(
                stream.pk,
                {"status": StreamStatus.ENDED, "ended_at": timezone.now(), "reason": "stopped"},
            )
            await announce_status(stream.slug, StreamStatus.ENDED, "stopped before going live")
            return {"state": StreamStatus.ENDED, "reason": "stopped before going live"}
        if stream.status == StreamStatus.LIVE and stream.worker != PROCESS_ID:
            raise Conflict(
                f"This stream is running in another process ({stream.worker}).",
                code="wrong-process",
            )
        return {"state": stream.status, "reason": stream.reason}
    entry.stopped_by_publisher = True
    state = await entry.pipeline.stop("stopped by the publisher")
    await _persist(entry)
    if _running.get(stream.slug) is entry:
        del _running[stream.slug]
    return {"state": str(state), "reason": entry.pipeline.reason, **_summary(entry)}


def _summary(entry: Running) -> dict[str, Any]:
    stats = entry.pipeline.stats()
    return {k: stats[k] for k in ("segments", "bytes_in", "chunks", "renditions")}


def status(slug: str) -> dict[str, Any] | None:
    """Public status of a stream (for the publisher page and viewers)."""
    stream = get_stream(slug)
    if stream is None:
        return None
    data: dict[str, Any] = {
        "slug": stream.slug,
        "title": stream.title,
        "status": stream.status,
        "reason": stream.reason,
        "renditions": stream.renditions,
        "segments": stream.segments_written,
        "hls": stream.hls_url,
        "dash": stream.dash_url,
        "started_at": stream.started_at.isoformat() if stream.started_at else None,
        "ended_at": stream.ended_at.isoformat() if stream.ended_at else None,
        "purged": stream.files_purged_at is not None,
    }
    clock = read_clock(stream.media_dir())
    data["clock"] = clock.as_dict() if clock else None
    return data


# --- viewers -----------------------------------------------------------------------------
# Viewers are presences in a room without capacity named ``stream.<slug>`` (room slugs
# have no dots, so no clash): the presence backends count them, expire ghosts, and the
# lobby gets their join/leave deltas like any room's.
def viewer_room(slug: str) -> str:
    return f"stream.{slug}"


def viewer_group(slug: str) -> str:
    """The channel-layer group of a stream's viewer sockets (presence and status events)."""
    return presence.room_group(viewer_room(slug))


async def viewer_count(slug: str) -> int:
    return len(await presence.members(viewer_room(slug)))


async def announce_status(slug: str, status: str, reason: str = "") -> None:
    """Tell the stream's viewers and every lobby that a stream went live, ended or failed."""
    event = {"type": "stream.status", "slug": slug, "status": status, "reason": reason}
    layer = get_channel_layer()
    try:
        await layer.group_send(viewer_group(slug), event)
        await layer.group_send(presence.LOBBY_GROUP, {**event, "type": "lobby.stream"})
    except Exception:  # a layer hiccup must not break ingest or the pipeline
        logger.exception("stream %s: could not announce status %s", slug, status)


async def stop_all(reason: str = "server shutting down") -> None:
    """Stop every pipeline of this process (used by tests and shutdown hooks)."""
    for entry in list(_running.values()):
        await entry.pipeline.stop(reason)
        await _persist(entry)
    _running.clear()


# --- housekeeping ------------------------------------------------------------------------
def mark_stale_streams(now=None) -> int:
    """Streams marked live whose process stopped reporting: mark them failed.

    A live pipeline saves its progress every few seconds; a row not updated for twice the
    idle timeout (at least a minute) belongs to a process that died.
    """
    now = now or timezone.now()
    idle = float(getattr(settings, "STREAM_IDLE_TIMEOUT", 30.0)) or 30.0
    cutoff = now - timedelta(seconds=max(60.0, 2 * idle))
    return Stream.objects.filter(status=StreamStatus.LIVE, updated_at__lt=cutoff).update(
        status=StreamStatus.FAILED,
        ended_at=now,
        reason="no progress reported: the server process running it stopped",
    )
