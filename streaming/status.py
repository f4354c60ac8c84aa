"""A stream's row kept up to date from the pipeline running it, and stale rows failed.

The row records the pipeline's state, counters and process (``worker``): on every state
change and, while live, every ``PROGRESS_SAVE_INTERVAL`` seconds. The worker also holds a
*lease* on the row (``worker_seen_at``), renewed every third of ``STREAM_OWNER_LEASE``
whether chunks come or not. Why the database and not the cache: the row already says who
runs the stream, taking it over must be one atomic compare-and-set on it (``claim``), and
the embedded default cache (LocMem) is per process, so no other process could see it.
A lease older than ``STREAM_OWNER_LEASE`` belongs to a process that died (or froze): ingest
reaching another process takes the stream over (streaming/ingest.py); a stream nobody
takes over is failed by ``mark_stale_streams`` (``manage.py maintain``/``purge_streams``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from rtcsite.process import PROCESS_ID
from streaming.models import Stream, StreamStatus
from streaming.pipeline import PipelineState, StreamPipeline

logger = logging.getLogger(__name__)

PROGRESS_SAVE_INTERVAL = 2.0  # seconds between progress writes to the row while live


def row_values(pipeline: StreamPipeline, *, stopped_by_publisher: bool) -> dict[str, Any]:
    """The row's fields for the pipeline as it is now (``status`` absent while idle)."""
    if pipeline.closed and pipeline.started_at is None:
        # Never went live. Failed (a source the site does not take, FFmpeg did not start):
        # failed, so it is not published again. Only refused chunks, then stopped by its
        # publisher: ended; abandoned: it stays idle and may be published again.
        if pipeline.state == PipelineState.FAILED:
            return {
                "status": StreamStatus.FAILED,
                "ended_at": pipeline.ended_at,
                "reason": pipeline.reason[:200],
                "failure_detail": pipeline.failure_detail[:4000],
                "worker": "",
            }
        if stopped_by_publisher:
            return {"status": StreamStatus.ENDED, "ended_at": timezone.now(), "reason": "stopped"}
        return {"status": StreamStatus.IDLE, "worker": ""}
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
        values.update(status=StreamStatus.LIVE, worker=PROCESS_ID, worker_seen_at=timezone.now())
        if pipeline.started_at:
            values["started_at"] = pipeline.started_at
    elif state == PipelineState.ENDED:
        values.update(status=StreamStatus.ENDED, ended_at=pipeline.ended_at, reason=pipeline.reason)
    elif state == PipelineState.FAILED:
        values.update(
            status=StreamStatus.FAILED,
            ended_at=pipeline.ended_at,
            reason=pipeline.reason[:200],
            failure_detail=pipeline.failure_detail[:4000],
        )
    return values


def _save_sync(stream_id: int, values: dict[str, Any]) -> None:
    try:
        Stream.objects.filter(pk=stream_id).update(**values)
    finally:
        close_old_connections()


def _save_owned_sync(stream_id: int, values: dict[str, Any]) -> bool:
    """Save a running pipeline's values unless another process holds the stream (it took
    it over while this one was frozen). False: not saved, the stream is another's."""
    try:
        theirs = Q(status=StreamStatus.LIVE) & ~Q(worker__in=("", PROCESS_ID))
        return bool(Stream.objects.filter(pk=stream_id).exclude(theirs).update(**values))
    finally:
        close_old_connections()


# Not thread-sensitive: these writes run from pipeline tasks that outlive the request (or
# socket) that started them, whose thread-sensitive executor is gone by then.
save = sync_to_async(_save_sync, thread_sensitive=False)
save_owned = sync_to_async(_save_owned_sync, thread_sensitive=False)


def lease_seen(stream: Stream):
    """When the worker last renewed its lease (rows from before leases: last update)."""
    return stream.worker_seen_at or stream.updated_at


def lease_left(stream: Stream, now=None) -> float:
    """Seconds until the worker's lease on a live row expires (<= 0: expired)."""
    now = now or timezone.now()
    return settings.STREAM_OWNER_LEASE - (now - lease_seen(stream)).total_seconds()


def _renew_sync(stream_id: int) -> bool | None:
    """True: renewed. False: another process holds the stream now (it took it over).
    None: nothing to renew (not live, or not saved as live yet)."""
    try:
        rows = Stream.objects.filter(pk=stream_id, status=StreamStatus.LIVE, worker=PROCESS_ID)
        if rows.update(worker_seen_at=timezone.now()):
            return True
        row = Stream.objects.filter(pk=stream_id).values("status", "worker").first()
        if row and row["status"] == StreamStatus.LIVE and row["worker"] not in ("", PROCESS_ID):
            return False
        return None
    finally:
        close_old_connections()


def _claim_sync(stream_id: int, worker: str) -> bool:
    """Take a live stream over from ``worker`` if its lease has expired: one conditional
    UPDATE, so of several processes trying at once exactly one wins."""
    try:
        now = timezone.now()
        cutoff = now - timedelta(seconds=settings.STREAM_OWNER_LEASE)
        return bool(
            Stream.objects.annotate(seen=Coalesce("worker_seen_at", "updated_at"))
            .filter(pk=stream_id, status=StreamStatus.LIVE, worker=worker, seen__lt=cutoff)
            .update(worker=PROCESS_ID, worker_seen_at=now)
        )
    finally:
        close_old_connections()


renew_lease = sync_to_async(_renew_sync, thread_sensitive=False)
claim = sync_to_async(_claim_sync, thread_sensitive=False)


def stale_after() -> float:
    """Seconds after its lease's last renewal that a live stream nobody took over is failed:
    never before the lease expires (ingest may still take it over until then), and at
    least a minute and twice the idle timeout (a publisher that comes back in time gets
    its stream continued, not failed)."""
    return max(60.0, 2 * settings.STREAM_IDLE_TIMEOUT, settings.STREAM_OWNER_LEASE)


def mark_stale_streams(now=None) -> int:
    """Streams marked live whose process stopped renewing its lease: mark them failed,
    their outputs made a VOD of what is on disk (streaming/runs.py)."""
    from streaming import runs

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=stale_after())
    stale = Stream.objects.annotate(seen=Coalesce("worker_seen_at", "updated_at")).filter(
        status=StreamStatus.LIVE, seen__lt=cutoff
    )
    marked = 0
    for stream in stale.only("pk", "slug", "worker"):
        # One row at a time, only if still stale and still its worker's: a takeover may
        # have claimed it since the query.
        if not stale.filter(pk=stream.pk, worker=stream.worker).update(
            status=StreamStatus.FAILED,
            ended_at=now,
            reason="no progress reported: the server process running it stopped",
        ):
            continue
        marked += 1
        try:
            runs.end_from_disk(stream.media_dir())
        except Exception:  # the row is failed; its files stay as the encoders left them
            logger.exception("stream %s: no VOD outputs written from disk", stream.slug)
    return marked
