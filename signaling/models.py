"""Recordings of server-room sessions (files under ``MEDIA_ROOT/recordings/``)."""

from __future__ import annotations

from django.db import models


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
    file = models.FileField(upload_to="recordings/", max_length=200)
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
