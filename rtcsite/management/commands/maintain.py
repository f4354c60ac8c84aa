"""The one maintenance job: everything visitors leave behind that must not pile up.

Run it from cron or a systemd timer (hourly; docs/deploy.md). Idempotent: a second run
finds nothing to do. In order:

1. stream media past ``STREAM_RETENTION_HOURS`` (``purge_streams``, which it calls);
2. recordings finished more than ``RECORDING_RETENTION_HOURS`` ago (row and file), and
   files under ``RECORDINGS_ROOT`` that belong to no recording, as old;
3. expired Django sessions (``clearsessions``);
4. visitor rooms (not pinned, not made in admin) idle for ``ROOM_IDLE_DELETE_HOURS`` and
   empty right now;
5. streams that never went live, untouched for ``STREAM_IDLE_DELETE_HOURS``;
6. the client addresses kept on streams that are no longer live (only live streams are
   counted by address, ``streaming.limits``; an address is personal data).

A setting of 0 switches its step off (``rtcsite.age.cutoff``).
"""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db.models import Q
from django.utils import timezone

from rtcsite.age import cutoff


async def _occupied_rooms() -> set[str]:
    """Rooms with someone in them, as the site's presence backend knows them: Redis when
    ``REDIS_URL`` is set. With the in-memory backend only the Daphne process itself knows
    (a command's own backend is empty): idle rooms are then deleted even if occupied."""
    from django.utils.module_loading import import_string

    from presence.backends import backend_path

    backend = import_string(backend_path(settings)).from_settings(settings)
    try:
        return set(await backend.room_counts())
    finally:
        await backend.close()  # while this event loop still runs


class Command(BaseCommand):
    help = (
        "Delete what outlived its retention: stream media (purge_streams), recordings, "
        "expired sessions, long-idle visitor rooms and never-used streams. Safe to run "
        "hourly from cron or a systemd timer."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Only list what would be deleted."
        )

    def handle(self, *args, dry_run: bool, **options) -> None:
        self.dry_run = dry_run
        self.prefix = "would delete" if dry_run else "deleted"
        call_command("purge_streams", dry_run=dry_run, stdout=self.stdout, stderr=self.stderr)
        self.recordings()
        self.sessions()
        self.rooms()
        self.streams()
        self.addresses()

    def report(self, what: str) -> None:
        self.stdout.write(f"{self.prefix} {what}")

    def recordings(self) -> None:
        from signaling.models import Recording, recordings_storage

        hours = settings.RECORDING_RETENTION_HOURS
        since = cutoff(hours)
        if since is None:
            return
        # A row still "recording" after the longest possible recording lost its process.
        lost = since - timedelta(seconds=settings.RECORDING_MAX_SECONDS)
        expired = Recording.objects.filter(
            Q(ended_at__lt=since) | Q(ended_at__isnull=True, started_at__lt=lost)
        )
        count = 0
        for recording in expired:
            if not self.dry_run:
                recording.delete()  # the file goes with it (signaling.models._delete_file)
            count += 1
        self.report(f"{count} recording(s) older than {hours:g} h")
        root = Path(recordings_storage().location)
        if not root.is_dir():
            return
        known = set(Recording.objects.values_list("file", flat=True))
        orphans = 0
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            if path.relative_to(root).as_posix() in known:
                continue
            if path.stat().st_mtime > time.time() - hours * 3600:
                continue  # a row may be on its way (or a recording of another process)
            if not self.dry_run:
                path.unlink(missing_ok=True)
            orphans += 1
        if orphans:
            self.report(f"{orphans} orphan recording file(s)")

    def sessions(self) -> None:
        from django.contrib.sessions.models import Session

        expired = Session.objects.filter(expire_date__lt=timezone.now()).count()
        if not self.dry_run:
            call_command("clearsessions")
        self.report(f"{expired} expired session(s)")

    def rooms(self) -> None:
        from rooms.models import Room

        since = cutoff(settings.ROOM_IDLE_DELETE_HOURS)
        if since is None:
            return
        idle = Room.objects.filter(pinned=False, last_active_at__lt=since).exclude(created_by="")
        # Someone may sit in a room for days without anyone joining: leave it be.
        occupied = async_to_sync(_occupied_rooms)()
        count = 0
        for room in idle.only("pk", "slug"):
            if room.slug in occupied:
                continue
            if not self.dry_run:
                room.delete()
            count += 1
        self.report(f"{count} visitor room(s) idle for {settings.ROOM_IDLE_DELETE_HOURS:g} h")

    def streams(self) -> None:
        from streaming.models import Stream, StreamStatus

        since = cutoff(settings.STREAM_IDLE_DELETE_HOURS)
        if since is None:
            return
        unused = Stream.objects.filter(
            status=StreamStatus.IDLE, started_at__isnull=True, updated_at__lt=since
        )
        count = 0
        for stream in unused:
            if not self.dry_run:
                shutil.rmtree(stream.media_dir(), ignore_errors=True)
                stream.delete()
            count += 1
        self.report(
            f"{count} never-used stream(s) idle for {settings.STREAM_IDLE_DELETE_HOURS:g} h"
        )

    def addresses(self) -> None:
        from streaming.models import Stream, StreamStatus

        kept = Stream.objects.exclude(status=StreamStatus.LIVE).exclude(address="")
        count = kept.count() if self.dry_run else kept.update(address="")
        self.report(f"the client address of {count} stream(s) no longer live")
