"""Streams as the site shows them: create (publish key shown once), keys, listing, the
public status, the viewers' room and the status announcements.

The live side is elsewhere: ``streaming.ingest`` (publish-key auth, chunks, stop),
``streaming.registry`` (this process's running pipelines) and ``streaming.status`` (a
running stream's row kept up to date).
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.crypto import get_random_string
from django.utils.text import slugify

from identity.services import Identity
from presence import services as presence
from rtcsite import quotas
from rtcsite.age import cutoff
from rtcsite.text import clean_title
from streaming import limits
from streaming.clock import read_clock
from streaming.lowlatency import read_mode
from streaming.models import Stream, StreamStatus, low_latency_default, new_publish_key

logger = logging.getLogger(__name__)

MAX_TITLE_LENGTH = 80


# --- creation and keys -------------------------------------------------------------------
def _new_slug(title: str) -> str:
    base = slugify(title)[:40].strip("-") or "stream"
    return f"{base}-{get_random_string(6, 'abcdefghijklmnopqrstuvwxyz0123456789')}"


def create_stream(
    title: str,
    owner: Identity | None,
    *,
    face_overlay: bool = False,
    low_latency: bool | None = None,
    address: str | None = None,
) -> tuple[Stream, str]:
    """A new idle stream and its publish key: the key is returned here once, never stored.

    Visitors create at most ``STREAM_CREATE_RATE`` per identity and
    ``STREAM_CREATE_RATE_PER_ADDRESS`` per client ``address`` (``rtcsite.quotas``), and none
    while they are at a live-stream cap (``streaming.limits``): ``RateLimited``/``Busy``.
    ``low_latency``: None takes ``STREAM_LOW_LATENCY_DEFAULT``.
    """
    title = clean_title(
        title, limit=MAX_TITLE_LENGTH, required="Give the stream a title.", plural="Titles"
    )
    address = quotas.address_key(address)
    owner_id = owner.id if owner else ""
    limits.check_create(owner_id, address)
    quotas.check(quotas.STREAM_CREATE, identity=owner_id, address=address)
    key = new_publish_key()
    for _attempt in range(5):
        stream = Stream(
            slug=_new_slug(title),
            title=title,
            owner_id=owner_id,
            owner_name=owner.name if owner else "",
            address=address,
            face_overlay=face_overlay,
            low_latency=low_latency_default() if low_latency is None else low_latency,
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
    """For the lobby: live first, then idle, then recent ended ones whose files remain.

    A stream left idle (created, never published, or waiting again) longer than
    ``STREAM_IDLE_HIDE_HOURS`` is left out: it still opens by URL.
    """
    order = {StreamStatus.LIVE: 0, StreamStatus.IDLE: 1, StreamStatus.ENDED: 2}
    listed = Stream.objects.filter(
        status__in=[StreamStatus.LIVE, StreamStatus.IDLE, StreamStatus.ENDED],
        files_purged_at__isnull=True,
    )
    since = cutoff(settings.STREAM_IDLE_HIDE_HOURS)
    if since is not None:
        listed = listed.exclude(status=StreamStatus.IDLE, updated_at__lt=since)
    streams = list(listed[: limit * 2])
    streams.sort(key=lambda s: (order[s.status], -s.created_at.timestamp()))
    return streams[:limit]


def get_stream(slug: str) -> Stream | None:
    return Stream.objects.filter(slug=slug).first()


# --- public status ----------------------------------------------------------------------
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
        "low_latency": stream.low_latency,
    }
    if stream.low_latency:  # the encoder's own once it has started, else the setting's
        mode = read_mode(stream.media_dir())
        data["part_target"] = mode.part_target if mode else settings.STREAM_LL_PART_SECONDS
    clock = read_clock(stream.media_dir())
    data["clock"] = clock.as_dict() if clock else None
    return data


# --- viewers -----------------------------------------------------------------------------
# Viewers are presences in a room without capacity named ``stream.<slug>`` (room slugs
# have no dots, so no clash): the presence backends count them, expire ghosts, and the
# lobby gets their join/leave deltas like any room's.
def viewer_room(slug: str) -> str:
    """A stream's viewers are an audience (presence.services: counts, not members)."""
    return f"{presence.AUDIENCE_PREFIX}{slug}"


def viewer_group(slug: str) -> str:
    """The channel-layer group of a stream's viewer sockets (presence and status events)."""
    return presence.room_group(viewer_room(slug))


async def announce_status(slug: str, status: str, reason: str = "") -> None:
    """Tell the stream's viewers and every lobby that a stream went live, ended or failed."""
    event = {"type": "stream.status", "slug": slug, "status": status, "reason": reason}
    layer = get_channel_layer()
    try:
        await layer.group_send(viewer_group(slug), event)
        await layer.group_send(presence.LOBBY_GROUP, {**event, "type": "lobby.stream"})
    except Exception:  # a layer hiccup must not break ingest or the pipeline
        logger.exception("stream %s: could not announce status %s", slug, status)
