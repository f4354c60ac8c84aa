"""What live streams may cost: how many at once, how long, how much disk.

Concurrency is counted, not rate-limited: the live streams are the database's ``live`` rows
(every process) plus the pipelines registered in this process that have not written theirs
yet. A stream may go live (its first chunk) unless its owner identity already has
``STREAM_MAX_LIVE_PER_IDENTITY`` live, its publisher's address
``STREAM_MAX_LIVE_PER_ADDRESS`` (429), this process runs ``STREAM_MAX_LIVE_PER_PROCESS``
FFmpeg children, or the site ``STREAM_MAX_LIVE`` (503). Creating a stream checks the same,
except the process (ingest may land on another one). ``refusal`` is the pure rule.

A running stream ends cleanly (FFmpeg finalises, VOD kept) with its reason once it has been
live ``STREAM_MAX_DURATION`` seconds or its folder holds more than ``STREAM_MAX_DISK_MB``
(``over_budget``, checked with each progress save, ``streaming.registry``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings

from rtcsite.errors import Busy, ClientError, RateLimited
from streaming.models import Stream, StreamStatus

#: Seconds a refused publisher is told to wait: a live stream lasts minutes to hours.
RETRY_AFTER = 60


@dataclass(frozen=True)
class LiveEntry:
    """One live (or starting) stream, as the caps count it."""

    slug: str
    owner_id: str
    address: str


def refusal(
    live: Iterable[LiveEntry],
    *,
    owner_id: str,
    address: str,
    in_process: int | None,
    slug: str = "",
) -> ClientError | None:
    """Why one more live stream (``slug``, by ``owner_id`` from ``address``) is refused, or
    None. ``live``: the site's live streams (deduplicated by slug); ``in_process``: how many
    run in this process (None: not checked). Empty owner or address: not counted by it."""
    others = [entry for entry in {e.slug: e for e in live}.values() if entry.slug != slug]
    cap = settings.STREAM_MAX_LIVE_PER_IDENTITY
    if cap and owner_id and sum(e.owner_id == owner_id for e in others) >= cap:
        return RateLimited(
            f"You already have {cap} live stream{'s' if cap != 1 else ''}, the most one "
            "visitor may run at once. Stop one before going live with another.",
            retry_after=RETRY_AFTER,
            quota="live-per-identity",
        )
    cap = settings.STREAM_MAX_LIVE_PER_ADDRESS
    if cap and address and sum(e.address == address for e in others) >= cap:
        return RateLimited(
            f"Your network address already has {cap} live streams, the most allowed at "
            "once. Stop one before going live with another.",
            retry_after=RETRY_AFTER,
            quota="live-per-address",
        )
    cap = settings.STREAM_MAX_LIVE_PER_PROCESS
    if cap and in_process is not None and in_process >= cap:
        return Busy(
            f"This server is running as many live streams as it can ({cap}). "
            "Try again in a minute.",
            retry_after=RETRY_AFTER,
            quota="live-per-process",
        )
    cap = settings.STREAM_MAX_LIVE
    if cap and len(others) >= cap:
        return Busy(
            f"The site is running as many live streams as it can ({cap}). Try again later.",
            retry_after=RETRY_AFTER,
            quota="live-site",
        )
    return None


def live_rows() -> list[LiveEntry]:
    """The streams marked live in the database (every process)."""
    rows = Stream.objects.filter(status=StreamStatus.LIVE).values_list(
        "slug", "owner_id", "address"
    )
    return [LiveEntry(*row) for row in rows]


alive_rows = sync_to_async(live_rows, thread_sensitive=False)


def check_create(owner_id: str, address: str) -> None:
    """Before creating a stream: refuse if its owner or address could not go live now."""
    exc = refusal(live_rows(), owner_id=owner_id, address=address, in_process=None)
    if exc is not None:
        raise exc


# --- a running stream's budget -----------------------------------------------------------
def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (segments, playlists), 0 if it does not exist."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += folder_bytes(Path(entry.path))
            else:
                total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:  # a segment FFmpeg replaced meanwhile
            continue
    return total


def over_duration(started_at: datetime | None, now: datetime | None = None) -> str:
    """The reason to end a stream live since ``started_at``, or "" (pure)."""
    limit = settings.STREAM_MAX_DURATION
    if not limit or started_at is None:
        return ""
    live = ((now or datetime.now(UTC)) - started_at).total_seconds()
    if live < limit:
        return ""
    return f"ended: reached the maximum live duration ({format_seconds(limit)})"


def over_disk(used_bytes: int) -> str:
    """The reason to end a stream whose folder holds ``used_bytes``, or "" (pure)."""
    limit_mb = settings.STREAM_MAX_DISK_MB
    if not limit_mb or used_bytes <= limit_mb * 1024 * 1024:
        return ""
    return f"ended: its recording reached the disk budget ({limit_mb:g} MB)"


def format_seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
