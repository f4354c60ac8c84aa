"""Recordings in admin: listed with size and duration, each linked to the staff-only file
view (``signaling.views.recording_file``)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from signaling.models import Recording


@admin.register(Recording)
class RecordingAdmin(admin.ModelAdmin):
    list_display = (
        "room_slug",
        "room_kind",
        "participant",
        "status",
        "started_at",
        "duration",
        "size",
        "download",
    )
    list_filter = ("room_kind", "status")
    search_fields = ("room_slug", "participant", "user_id")
    readonly_fields = [f.name for f in Recording._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # made by the server only

    @admin.display(description="duration")
    def duration(self, obj: Recording) -> str:
        return f"{obj.duration_s:.1f} s"

    @admin.display(description="size")
    def size(self, obj: Recording) -> str:
        return f"{obj.size_bytes / 1024:.0f} KB"

    @admin.display(description="file")
    def download(self, obj: Recording):
        if not obj.file or obj.status == Recording.Status.RECORDING:
            return "—"
        url = reverse("signaling:recording-file", args=[obj.pk])
        return format_html(
            '<a href="{}" data-testid="recording-download">{}</a>', url, obj.file.name
        )
