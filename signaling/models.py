"""Recordings of server-room sessions (files under ``RECORDINGS_ROOT``, outside MEDIA_ROOT)."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.db import models
from django.db.models.signals import post_delete
from django.dispatch import receiver


class RecordingStorage(FileSystemStorage):
    """``RECORDINGS_ROOT``, read at each use (tests and deployments move it), and no URL:
    files leave only through ``signaling.views.recording_file``, to staff."""

    @property
    def base_location(self) -> str:
        return str(settings.RECORDINGS_ROOT)

    @property
    def location(self) -> str:
        return os.path.abspath(self.base_location)

    @property
    def base_url(self) -> None:
        return None


_storage = RecordingStorage()


def recordings_storage() -> RecordingStorage:
    return _storage


class Recording(models.Model):
    """One participant's media in an echo or relay room, recorded by the server."""

    class Status(models.TextChoices):
        RECORDING = "recording", "Recording"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    room_slug = models.CharField(max_length=48, db_index=True)
    room_kind = models.CharField(max_length=8)
    participant = models.CharField(max_length=40, help_text="Display name at the time.")
    user_id = models.CharField(max_length=16, help_text="Identity id of the participant.")
    file = models.FileField(
        storage=recordings_storage,
        max_length=200,
        help_text="Random name under RECORDINGS_ROOT (never under MEDIA_ROOT).",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECORDING)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_s = models.FloatField(default=0)
    size_bytes = models.BigIntegerField(default=0)
    video_frames = models.PositiveIntegerField(default=0)
    audio_frames = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.room_slug} · {self.participant} · {self.started_at:%Y-%m-%d %H:%M}"


@receiver(post_delete, sender=Recording)
def _delete_file(sender, instance: Recording, **kwargs) -> None:
    """A deleted row takes its file along (admin, ``manage.py maintain``): no orphan media."""
    if instance.file:
        instance.file.delete(save=False)
