"""A stream's row kept up to date from the pipeline running it, and stale rows failed.

The row records the pipeline's state, counters and process (``worker``): on every state
change and, while live, every ``PROGRESS_SAVE_INTERVAL`` seconds. A row that stops being
updated while live belongs to a process that died (``mark_stale_streams``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from rtcsite.process import PROCESS_ID
from streaming.models import Stream, StreamStatus
from streaming.pipeline import PipelineState, StreamPipeline

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
        values.update(status=StreamStatus.LIVE, worker=PROCESS_ID)
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


# Not thread-sensitive: these writes run from pipeline tasks that outlive the request (or
# socket) that started them, whose thread-sensitive executor is gone by then.
save = sync_to_async(_save_sync, thread_sensitive=False)


def mark_stale_streams(now=None) -> int:
    """Streams marked live whose process stopped reporting: mark them failed.

    A live pipeline saves its progress every few seconds; a row not updated for twice the
    idle timeout (at least a minute) belongs to a process that died.
    """
    now = now or timezone.now()
    idle = settings.STREAM_IDLE_TIMEOUT
    cutoff = now - timedelta(seconds=max(60.0, 2 * idle))
    return Stream.objects.filter(status=StreamStatus.LIVE, updated_at__lt=cutoff).update(
        status=StreamStatus.FAILED,
        ended_at=now,
        reason="no progress reported: the server process running it stopped",
    )
