"""Publishing: publish-key auth, one chunk into the stream's pipeline, stop.

The HTTP ingest views and the WebSocket ingest consumer call these; every refusal is a
``rtcsite.errors.ClientError`` (the pipeline's own ones included), which they send as is.
A stream's pipeline runs in the process that took its first chunk (``streaming.registry``);
another process answers ``wrong-process`` (with ``retry_after``: when that process's lease
expires) while that process holds its lease. Once the lease has expired (the process died),
the next chunk reaching any process takes the stream over: it continues there, with a
discontinuity, from the runs on disk (streaming/runs.py). Taking over rather than ending:
the publisher is still sending, and the viewers keep one stream. The first chunk goes live
only within the live-stream caps (``streaming.limits``), counted against the publisher's
address.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from rtcsite import metrics, quotas
from rtcsite.errors import ClientError, Conflict, Forbidden, NotFound, RateLimited, TooLarge
from rtcsite.process import PROCESS_ID
from streaming import limits, registry, runs, status
from streaming.models import Stream, StreamStatus
from streaming.registry import LiveStream
from streaming.services import announce_status, get_stream

logger = logging.getLogger(__name__)


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


def _elsewhere(stream: Stream) -> Conflict:
    """A live stream whose pipeline runs in another process (sticky ingest missed, or that
    process died and its lease has not expired yet: ``retry_after`` says when it will)."""
    return Conflict(
        f"This stream is running in another server process ({stream.worker}); "
        "ingest for one stream must always reach the same process.",
        code="wrong-process",
        retry_after=max(1, math.ceil(status.lease_left(stream))),
    )


def _live_stream(stream: Stream) -> LiveStream | None:
    """The stream's pipeline in this process; None if the stream may go live here."""
    live = registry.get(stream.slug)
    if live is not None:
        if live.pipeline.closed:  # ended a moment ago; its status write may be pending
            reason = live.pipeline.reason
            raise Conflict(f"This stream has {live.pipeline.state}: {reason}.", code="closed")
        return live
    if not stream.accepts_chunks:
        raise Conflict(
            f"This stream has {stream.status}"
            + (f": {stream.reason}" if stream.reason else "")
            + ". Create a new stream to go live again.",
            code="closed",
        )
    if stream.status == StreamStatus.LIVE:
        if stream.worker and stream.worker != PROCESS_ID:
            if status.lease_left(stream) > 0:
                raise _elsewhere(stream)
            return None  # its process died: take it over (``_go_live``)
        # Live in this process but no pipeline any more: it just closed. Never restart an
        # encode into a folder that already holds this stream's segments.
        raise Conflict("This stream's pipeline has closed. Create a new stream.", code="closed")
    return None


async def _go_live(stream: Stream, address: str, **start: Any) -> LiveStream:
    """Start the stream's pipeline here unless a live-stream cap refuses it
    (``streaming.limits``: 429 per identity or address, 503 process or site full)."""
    if stream.status == StreamStatus.LIVE and stream.worker != PROCESS_ID:
        return await _take_over(stream, address)
    rows = await limits.alive_rows()
    # From here to the registration there is no await: two first chunks in this process
    # cannot both take the last place.
    live = _live_stream(stream)  # another request may have started it meanwhile
    if live is not None:
        return live
    local = registry.entries()
    refused = limits.refusal(
        [*rows, *local],
        owner_id=stream.owner_id,
        address=address,
        in_process=len(local),
        slug=stream.slug,
    )
    if refused is not None:
        logger.info("stream %s: not going live: %s", stream.slug, refused.message)
        raise refused
    live = registry.start(stream, address, **start)
    if address and address != stream.address:  # other processes count it by this address
        try:
            await status.save(stream.pk, {"address": address})
        except Exception:  # the stream goes on; only other processes' count is off
            logger.exception("stream %s: could not save its publisher's address", stream.slug)
    return live


async def _take_over(stream: Stream, address: str) -> LiveStream:
    """Continue here a live stream whose process's lease expired. Exactly one process wins
    the claim; the others answer ``wrong-process`` (then its lease is fresh again). No cap
    is checked: the stream was already live and counted."""
    claimed = await status.claim(stream.pk, stream.worker)
    live = registry.get(stream.slug)  # another request here may have done it meanwhile
    if live is not None:
        return live
    if not claimed:
        raise _elsewhere(stream)
    logger.warning("stream %s: taking it over from %s (lease expired)", stream.slug, stream.worker)
    return registry.start(stream, address or stream.address, resume=True)


async def go_live_raw(
    stream: Stream, address: str = "", *, publisher: Any, idle_timeout: float | None = None
) -> LiveStream:
    """A WebRTC (WHIP) ``publisher`` takes ``stream`` (authenticated by the caller): its
    pipeline starts here within the live-stream caps, like a first chunk's. Refused with
    ``Conflict``: ``publishing`` while another publisher (WebRTC or chunks) has it,
    ``closed`` once it ended, ``wrong-process`` while it is live in another process (no
    takeover: the stream's frames died with that process's peer connection)."""
    if stream.status == StreamStatus.LIVE and stream.worker != PROCESS_ID:
        raise _elsewhere(stream)
    if _live_stream(stream) is not None:
        raise Conflict("This stream already has a live publisher.", code="publishing")
    live = await _go_live(stream, quotas.address_key(address), idle_timeout=idle_timeout)
    # _go_live hands back a pipeline another request started meanwhile: only one claims it
    if live.publisher is not None or live.pipeline.source_info is not None:
        raise Conflict("This stream already has a live publisher.", code="publishing")
    live.publisher = publisher
    return live


async def feed_chunk(
    slug: str,
    key: str | None,
    seq: Any,
    data: bytes,
    *,
    stream: Stream | None = None,
    capture_ms: Any = None,
    address: str = "",
) -> dict[str, Any]:
    """Authenticate, rate-limit and feed one chunk; returns the publisher's status reply.

    ``stream``: already authenticated with ``key`` by the caller in this request.
    ``address``: the publisher's client address (``rtcsite.http``), counted by the
    live-stream caps when this chunk makes the stream go live. ``capture_ms``: the
    publisher's capture clock (epoch ms of media time 0, synced with
    ``/streams/time/``), sent with the first chunk; it anchors the HLS/DASH timelines
    (streaming/clock.py). Ignored once the encoder runs.
    """
    if stream is None or stream.slug != slug:
        stream = await authenticate(slug, key)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or seq > 2**31:
        raise ClientError("'seq' must be an integer >= 0.", code="invalid")
    limit = settings.STREAM_MAX_CHUNK_BYTES
    if len(data) > limit:
        raise TooLarge(f"Chunk of {len(data)} bytes is over the limit of {limit} bytes.")
    if not data:
        raise ClientError(f"Chunk seq={seq} is empty.", code="invalid")
    live = _live_stream(stream) or await _go_live(stream, quotas.address_key(address))
    if live.publisher is not None:  # claimed by a WHIP session, before its first frame too
        raise Conflict(
            "This stream is being published over WebRTC (WHIP): it takes no chunks.",
            code="publishing",
        )
    if not live.bucket.take():
        raise RateLimited("Too many chunks for this stream; slow down.")
    pipeline = live.pipeline
    result = await pipeline.feed(seq, data, wait=settings.STREAM_FEED_WAIT, capture_ms=capture_ms)
    metrics.ingested(slug, len(data))
    live.save_progress_if_due()
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
    live = registry.get(stream.slug)
    if live is None:
        if stream.status == StreamStatus.IDLE:
            await status.save(
                stream.pk,
                {"status": StreamStatus.ENDED, "ended_at": timezone.now(), "reason": "stopped"},
            )
            await announce_status(stream.slug, StreamStatus.ENDED, "stopped before going live")
            return {"state": StreamStatus.ENDED, "reason": "stopped before going live"}
        if stream.status == StreamStatus.LIVE and stream.worker != PROCESS_ID:
            if status.lease_left(stream) > 0 or not await status.claim(stream.pk, stream.worker):
                raise _elsewhere(stream)
            # Its process died: end it here, the outputs made VOD from what is on disk.
            reason = "stopped by the publisher"
            await asyncio.to_thread(runs.end_from_disk, stream.media_dir())
            values = {"status": StreamStatus.ENDED, "ended_at": timezone.now(), "reason": reason}
            await status.save(stream.pk, values)
            await announce_status(stream.slug, StreamStatus.ENDED, reason)
            return {"state": StreamStatus.ENDED, "reason": reason}
        return {"state": stream.status, "reason": stream.reason}
    state = await live.stop("stopped by the publisher")
    stats = live.pipeline.stats()
    summary = {k: stats[k] for k in ("segments", "bytes_in", "chunks", "renditions")}
    return {"state": str(state), "reason": live.pipeline.reason, **summary}
