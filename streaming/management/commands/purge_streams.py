"""Retention: delete the media files of streams that ended long enough ago.

Run it from cron or a systemd timer (e.g. hourly). Streams keep their database row (title,
times, counters); ``files_purged_at`` records when their files went. Folders under
``MEDIA_ROOT/streams/`` that belong to no stream are removed too once they are older than
the retention period. Live streams whose process stopped reporting are marked failed first.
"""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from streaming.models import Stream, StreamStatus
from streaming.status import mark_stale_streams


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class Command(BaseCommand):
    help = (
        "Delete the files of streams that ended (or failed) more than STREAM_RETENTION_HOURS "
        "ago, and of orphan folders under MEDIA_ROOT/streams/."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--hours",
            type=float,
            default=None,
            help="Retention in hours (default: the STREAM_RETENTION_HOURS setting).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Only list what would be deleted."
        )

    def handle(self, *args, hours: float | None, dry_run: bool, **options) -> None:
        hours = settings.STREAM_RETENTION_HOURS if hours is None else hours
        if hours < 0:
            raise CommandError("--hours must be >= 0.")
        now = timezone.now()
        cutoff = now - timedelta(hours=hours)
        root = Path(settings.MEDIA_ROOT) / "streams"
        if not dry_run:
            stale = mark_stale_streams(now)
            if stale:
                self.stdout.write(f"marked {stale} stale live stream(s) failed")
        expired = Stream.objects.filter(
            status__in=[StreamStatus.ENDED, StreamStatus.FAILED],
            ended_at__lt=cutoff,
            files_purged_at__isnull=True,
        )
        prefix = "would delete" if dry_run else "deleted"
        count = freed = 0
        for stream in expired:
            folder = stream.media_dir()
            size = _folder_size(folder) if folder.is_dir() else 0
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
                Stream.objects.filter(pk=stream.pk).update(files_purged_at=now)
            count += 1
            freed += size
            self.stdout.write(f"{prefix} {stream.slug}: {size} bytes (ended {stream.ended_at})")
        known = set(Stream.objects.values_list("slug", flat=True))
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                if not folder.is_dir() or folder.is_symlink() or folder.name in known:
                    continue
                if folder.stat().st_mtime > time.time() - hours * 3600:
                    continue
                size = _folder_size(folder)
                if not dry_run:
                    shutil.rmtree(folder, ignore_errors=True)
                count += 1
                freed += size
                self.stdout.write(f"{prefix} orphan folder {folder.name}: {size} bytes")
        self.stdout.write(
            self.style.SUCCESS(f"{prefix} {count} folder(s), {freed} bytes (retention {hours:g} h)")
        )
