"""Room services: create-or-join by name, listing (idle visitor rooms leave it), closing.

Views and consumers call these; they hold the rules (naming, kinds, who may close).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from identity.services import Identity
from presence import services as presence
from rooms.models import SLUG_RE, Room, RoomKind
from rtcsite import quotas
from rtcsite.age import cutoff
from rtcsite.batching import Batcher
from rtcsite.text import clean_title

MAX_TITLE_LENGTH = 80
_SLUG_RE = re.compile(SLUG_RE)


class RoomKindConflict(ValidationError):
    """A room of that name exists with another kind."""


@dataclass(frozen=True)
class JoinResult:
    room: Room
    created: bool


def slug_for_name(name: str) -> str:
    """The URL slug a room name maps to (``"Team Sync!"`` → ``team-sync``)."""
    return slugify(name)[:48].strip("-")


def clean_room_name(raw: str) -> str:
    name = clean_title(
        raw, limit=MAX_TITLE_LENGTH, required="Give the room a name.", plural="Room names"
    )
    if not slug_for_name(name):
        raise ValidationError("The name needs at least one letter or digit.", code="invalid")
    return name


def get_or_create_room(
    name: str, kind: str, creator: Identity, *, address: str | None = None
) -> JoinResult:
    """Open the room called ``name`` of ``kind``, creating it if nobody has yet.

    Anyone may create a room, at the rate ``ROOM_CREATE_RATE`` per identity and
    ``ROOM_CREATE_RATE_PER_ADDRESS`` per client ``address`` (``rtcsite.quotas``: only a new
    room counts; joining never does). Names map to slugs, so "Team sync" and "team-sync"
    are the same room; asking for an existing name with another kind is refused (one URL,
    one kind). Concurrent creators of the same name both end up in the one room.
    """
    if kind not in RoomKind.values:
        raise ValidationError(f"Unknown room kind {kind!r}.", code="invalid_kind")
    title = clean_room_name(name)
    slug = slug_for_name(title)
    room = Room.objects.filter(slug=slug).first()
    created = False
    if room is None:
        quotas.check(quotas.ROOM_CREATE, identity=creator.id, address=address)
        candidate = Room(
            slug=slug, title=title, kind=kind, created_by=creator.id, created_by_name=creator.name
        )
        candidate.full_clean()
        try:
            with transaction.atomic():
                candidate.save()
            room, created = candidate, True
            presence.announce_new_room(room.slug, room.kind)
        except IntegrityError:  # lost a race with another creator: join theirs
            room = Room.objects.get(slug=slug)
    if not created:
        note_activity(room)
    if room.kind != kind:
        raise RoomKindConflict(
            f"“{room.title}” is already a {room.get_kind_display().lower()} room.",
            code="kind_conflict",
        )
    return JoinResult(room=room, created=created)


def get_room(slug: str) -> Room | None:
    return Room.objects.filter(slug=slug).first()


#: slug -> (fetched at, room): rooms read by sockets, kept briefly (see ``cached_room``)
_room_cache: dict[str, tuple[float, Room]] = {}


def cached_room(slug: str) -> Room | None:
    """The room if this process read it less than ``ROOM_CACHE_SECONDS`` ago, else None.

    Every room socket connect needs its room; a query per connect (a thread hop, a new
    SQLite connection) was a large share of connect-time CPU (docs/decisions.md, "Presence
    hot path"). Saves and deletes in this process drop the entry at once (signals,
    ``rooms/apps.py``); another process's change (an admin closing the room elsewhere) is
    seen within the TTL. Misses are never cached, so a room created anywhere is joinable at
    once.
    """
    from django.conf import settings

    hit = _room_cache.get(slug)
    if hit is None:
        return None
    if time.monotonic() - hit[0] >= settings.ROOM_CACHE_SECONDS:
        _room_cache.pop(slug, None)
        return None
    return hit[1]


def remember_room(room: Room) -> None:
    from django.conf import settings

    if settings.ROOM_CACHE_SECONDS > 0:
        if len(_room_cache) >= 10_000:  # bounded: forget everything rather than grow
            _room_cache.clear()
        _room_cache[room.slug] = (time.monotonic(), room)


def forget_room(slug: str | None = None) -> None:
    """Drop one cached room (or all): called on save/delete/migrate."""
    if slug is None:
        _room_cache.clear()
        _activity_written.clear()
    else:
        _room_cache.pop(slug, None)
        _activity_written.pop(slug, None)


def read_rooms(slugs: list[str]) -> dict[str, Room]:
    """The rooms with these slugs (missing ones absent): one query for a batch of misses."""
    return {room.slug: room for room in Room.objects.filter(slug__in=slugs)}


def _keeping_connection(func, *args):
    """``func(*args)`` in the reader thread, whose database connection stays open.

    ``database_sync_to_async`` closes the connection around every call (CONN_MAX_AGE 0 for
    SQLite): opening SQLite and registering its functions is most of a miss's cost. A
    failed query (database restarted, connection dropped) closes it so the retry reconnects.
    """
    try:
        return func(*args)
    except DatabaseError:
        connection.close()
        return func(*args)


_reader_pool: ThreadPoolExecutor | None = None


class RoomReader:
    """Reads rooms missing from the cache for socket connects, off the event loop.

    Misses that arrive while a read is in flight go out together as the next read (one
    ``slug IN (...)`` query, one thread hop; ``rtcsite.batching``): a lone miss is read at
    once, a burst of connects to new rooms shares the work. Found rooms are remembered
    (``remember_room``); misses are not.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.misses: Batcher[str, Room | None] = Batcher(self._read)

    async def get(self, slug: str) -> Room | None:
        room = cached_room(slug)
        if room is not None:
            return room
        return await self.misses.call(slug)

    async def _read(self, slugs: list[str]) -> list[Room | None]:
        global _reader_pool
        if _reader_pool is None:
            _reader_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="room-reader")
        rooms = await self.loop.run_in_executor(
            _reader_pool, _keeping_connection, read_rooms, list(dict.fromkeys(slugs))
        )
        for room in rooms.values():
            remember_room(room)
        return [rooms.get(slug) for slug in slugs]


_reader: RoomReader | None = None


async def aget_room(slug: str) -> Room | None:
    """The room for a socket connect: from the cache, else read (batched with other misses)."""
    global _reader
    loop = asyncio.get_running_loop()
    if _reader is None or _reader.loop is not loop:
        _reader = RoomReader()
    return await _reader.get(slug)


# --- the lobby lists rooms in use (idle visitor rooms leave it) ---------------------------------
def listed_q(now: datetime | None = None) -> Q:
    """Rooms the lobby shows: made in admin (no creator), pinned, or joined recently."""
    from django.conf import settings

    since = cutoff(settings.ROOM_IDLE_HIDE_HOURS, now)
    if since is None:
        return Q()
    return Q(created_by="") | Q(pinned=True) | Q(last_active_at__gte=since)


def is_listed(room: Room, now: datetime | None = None) -> bool:
    """``listed_q`` for one room already read."""
    from django.conf import settings

    since = cutoff(settings.ROOM_IDLE_HIDE_HOURS, now)
    return since is None or not room.expires or room.last_active_at >= since


def list_rooms(kind: str | None = None, *, include_closed: bool = False) -> list[Room]:
    """The lobby's rooms: idle visitor rooms are left out (they still open by URL)."""
    rooms = Room.objects.filter(listed_q())
    if kind is not None:
        rooms = rooms.filter(kind=kind)
    if not include_closed:
        rooms = rooms.filter(is_open=True)
    return list(rooms.order_by("-created_at")[:200])


async def aunlisted_rooms(slugs: Iterable[str]) -> set[str]:
    """Which of these presence rooms are rooms the lobby does not list (for its snapshot).

    Read through the socket connects' room cache (``aget_room``): a lobby connect costs no
    query while the rooms are cached, and misses share one. Keys that are not room slugs
    (a stream's audience, ``stream.<slug>``) are never unlisted here.
    """
    from django.conf import settings

    if settings.ROOM_IDLE_HIDE_HOURS <= 0:
        return set()
    rooms: list[Room | None] = []
    misses = []
    for slug in slugs:
        if _SLUG_RE.fullmatch(slug):
            room = cached_room(slug)
            if room is None:
                misses.append(slug)
            else:
                rooms.append(room)
    if misses:  # read together (RoomReader batches the misses that wait at once)
        rooms += await asyncio.gather(*(aget_room(slug) for slug in misses))
    now = timezone.now()
    return {room.slug for room in rooms if room is not None and not is_listed(room, now)}


#: slug -> monotonic time this process last wrote (or found fresh) the room's activity
_activity_written: dict[str, float] = {}


def _activity_due(room: Room) -> bool:
    """At most one write per room per ``ROOM_ACTIVITY_WRITE_SECONDS`` from this process, and
    none while the copy at hand is that fresh (a room just created or written elsewhere):
    joins are the hot path, and "idle" is measured in hours."""
    from django.conf import settings

    now = time.monotonic()
    last = _activity_written.get(room.slug)
    if last is not None and now - last < settings.ROOM_ACTIVITY_WRITE_SECONDS:
        return False
    if len(_activity_written) >= 10_000:  # bounded: forget everything rather than grow
        _activity_written.clear()
    _activity_written[room.slug] = now
    fresh = timezone.now() - timedelta(seconds=settings.ROOM_ACTIVITY_WRITE_SECONDS)
    return room.last_active_at is None or room.last_active_at < fresh


def _write_activity(room: Room) -> None:
    from django.conf import settings

    now = timezone.now()
    stale = now - timedelta(seconds=settings.ROOM_ACTIVITY_WRITE_SECONDS)
    # conditional: other processes that wrote it lately make this a no-op
    Room.objects.filter(pk=room.pk, last_active_at__lt=stale).update(last_active_at=now)
    room.last_active_at = now  # the cached copy, so this process lists it again at once


def note_activity(room: Room) -> None:
    """Someone joined ``room``: it is in use (keeps it in the lobby)."""
    if _activity_due(room):
        _write_activity(room)


async def anote_activity(room: Room) -> None:
    """``note_activity`` for a socket join: the rare write runs in the reader's thread."""
    if not _activity_due(room):
        return
    global _reader_pool
    if _reader_pool is None:
        _reader_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="room-reader")
    await asyncio.get_running_loop().run_in_executor(
        _reader_pool, _keeping_connection, _write_activity, room
    )


def set_room_open(room: Room, is_open: bool, user: AbstractBaseUser | AnonymousUser) -> Room:
    """Open or close a room; only staff may (visitors can create rooms, not close them)."""
    if not (user.is_authenticated and user.is_staff):
        raise PermissionDenied("Only staff can open or close rooms.")
    room.is_open = is_open
    room.save(update_fields=["is_open"])
    return room
