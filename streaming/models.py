"""The Stream model: one live stream, its secret publish key (hashed) and its status."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from rooms.models import slug_validator

PUBLISH_KEY_PREFIX = "sk_"
STANDARD_TIMESLICE_MS = 250  # the publisher's MediaRecorder chunk for standard-mode streams
#: A publish key is this prefix plus 32 random bytes (URL-safe base64).
PUBLISH_KEY_BYTES = 32


def low_latency_default() -> bool:
    """A callable default: the migration refers to it, not to the setting's value then."""
    return settings.STREAM_LOW_LATENCY_DEFAULT


def new_publish_key() -> str:
    return PUBLISH_KEY_PREFIX + secrets.token_urlsafe(PUBLISH_KEY_BYTES)


def hash_publish_key(key: str) -> str:
    """SHA-256 of the key. Keys are 256-bit random, so a fast hash is enough (no guessing)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class StreamStatus(models.TextChoices):
    IDLE = "idle", "Idle (waiting for the publisher)"
    LIVE = "live", "Live"
    ENDED = "ended", "Ended"
    FAILED = "failed", "Failed"


class Stream(models.Model):
    slug = models.SlugField(max_length=48, unique=True, validators=[slug_validator])
    title = models.CharField(max_length=80)
    face_overlay = models.BooleanField(
        default=False, help_text="Draw server-side face boxes (OpenCV) into the renditions."
    )
    low_latency = models.BooleanField(
        default=low_latency_default,
        help_text="LL-HLS parts and LL-DASH chunks (about 1 s glass to glass); read at go-live.",
    )
    owner_id = models.CharField(
        max_length=16, blank=True, help_text="Identity id of the visitor who created it."
    )
    owner_name = models.CharField(max_length=40, blank=True)
    address = models.CharField(
        max_length=64,
        blank=True,
        help_text="Client address (IPv6: its /64) of the creator, then of the publisher once "
        "live: the live-stream quotas count by it.",
    )
    publish_key_hash = models.CharField(
        max_length=64, editable=False, help_text="SHA-256 of the publish key (never stored)."
    )
    status = models.CharField(
        max_length=8, choices=StreamStatus.choices, default=StreamStatus.IDLE, db_index=True
    )
    reason = models.TextField(
        blank=True, help_text="Why the stream ended or failed: short, shown to everyone."
    )
    failure_detail = models.TextField(
        blank=True,
        help_text="Staff only: how the encoder failed, with FFmpeg's last output lines.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    renditions = models.JSONField(
        default=list, blank=True, help_text="Ladder rungs used, highest first (e.g. 480p, 360p)."
    )
    bytes_received = models.BigIntegerField(default=0)
    chunks_received = models.PositiveIntegerField(default=0)
    segments_written = models.PositiveIntegerField(default=0)
    worker = models.CharField(
        max_length=80, blank=True, help_text="host:pid of the process running the pipeline."
    )
    worker_seen_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The worker's lease: renewed while it runs the pipeline. Once older than "
        "STREAM_OWNER_LEASE, another process may take the stream over.",
    )
    files_purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When the retention policy deleted the media files."
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.title} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("streaming:detail", args=[self.slug])

    # --- publish key -----------------------------------------------------------------------
    def set_publish_key(self, key: str) -> None:
        self.publish_key_hash = hash_publish_key(key)

    def check_publish_key(self, key: str | None) -> bool:
        """Constant-time comparison of the key's hash with the stored one."""
        if not key or not self.publish_key_hash or len(key) > 200:
            return False
        return hmac.compare_digest(hash_publish_key(key), self.publish_key_hash)

    # --- derived -----------------------------------------------------------------------------
    @property
    def is_live(self) -> bool:
        return self.status == StreamStatus.LIVE

    @property
    def accepts_chunks(self) -> bool:
        return self.status in (StreamStatus.IDLE, StreamStatus.LIVE)

    def live_duration(self):
        """Time live so far (or in total once ended); None before the first chunk."""
        if not self.started_at:
            return None
        end = self.ended_at or timezone.now()
        return max(end - self.started_at, timedelta(0))

    @property
    def publish_timeslice_ms(self) -> int:
        """The chunk the publisher forms start with (their field can change it): short for
        low-latency streams, so a part's frames reach FFmpeg within ~0.1 s."""
        return settings.STREAM_LL_TIMESLICE_MS if self.low_latency else STANDARD_TIMESLICE_MS

    def media_dir(self) -> Path:
        return Path(settings.MEDIA_ROOT) / "streams" / self.slug

    def media_url(self, name: str) -> str:
        return f"{settings.MEDIA_URL}streams/{self.slug}/{name}"

    @property
    def hls_url(self) -> str:
        return self.media_url("master.m3u8")

    @property
    def dash_url(self) -> str:
        return self.media_url("manifest.mpd")

    def get_publish_url(self) -> str:
        return reverse("streaming:publish", args=[self.slug])

    @property
    def hls_watch_url(self) -> str:
        return reverse("streaming:watch", kwargs={"slug": self.slug, "player": "hls"})

    @property
    def dash_watch_url(self) -> str:
        return reverse("streaming:watch", kwargs={"slug": self.slug, "player": "dash"})
