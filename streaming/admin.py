from datetime import timedelta

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html

from streaming.models import Stream
from streaming.services import rotate_publish_key


def _format_duration(value: timedelta | None) -> str:
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _format_bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


@admin.register(Stream)
class StreamAdmin(admin.ModelAdmin):
    list_display = (
        "title",
        "slug",
        "status",
        "low_latency",
        "owner_name",
        "live_duration_display",
        "bytes_display",
        "segments_written",
        "ladder",
        "links",
        "created_at",
    )
    list_filter = ("status", "low_latency", "face_overlay", "created_at")
    search_fields = ("title", "slug", "owner_id", "owner_name", "address")
    readonly_fields = (
        "slug",  # the media folder is named after it
        "status",
        "reason",
        "failure_detail",  # FFmpeg's words, may name server paths: staff only
        "created_at",
        "started_at",
        "ended_at",
        "updated_at",
        "renditions",
        "bytes_received",
        "chunks_received",
        "segments_written",
        "worker",
        "worker_seen_at",
        "files_purged_at",
        "owner_id",
        "owner_name",
        "address",  # who the live-stream caps count it against (staff tracing abuse)
        "links",
    )
    # face_overlay, low_latency: read at go-live (a live stream keeps its encoder's mode)
    fields = ("title", "face_overlay", "low_latency", *readonly_fields)
    actions = ("rotate_keys",)
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # streams are created from /streams/ so the key is shown to its publisher

    @admin.display(description="live for")
    def live_duration_display(self, stream: Stream) -> str:
        return _format_duration(stream.live_duration())

    @admin.display(description="received", ordering="bytes_received")
    def bytes_display(self, stream: Stream) -> str:
        return _format_bytes(stream.bytes_received)

    @admin.display(description="ladder")
    def ladder(self, stream: Stream) -> str:
        return ", ".join(stream.renditions) or "—"

    @admin.display(description="links")
    def links(self, stream: Stream) -> str:
        return format_html(
            '<a href="{}">page</a> · watch: <a href="{}">hls.js</a> · <a href="{}">dash.js</a>'
            ' · files: <a href="{}">m3u8</a> · <a href="{}">mpd</a>',
            stream.get_absolute_url(),
            stream.hls_watch_url,
            stream.dash_watch_url,
            stream.hls_url,
            stream.dash_url,
        )

    @admin.action(description="Rotate the publish key (the new key is shown once)")
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[Stream]) -> TemplateResponse:
        """Show the new keys on the response page itself: a message would carry them in the
        ``messages`` cookie (or session) to the next page, stored outside the hash."""
        rotated = [(stream, rotate_publish_key(stream)) for stream in queryset]
        response = TemplateResponse(
            request,
            "admin/streaming/stream/rotated_keys.html",
            {**self.admin_site.each_context(request), "rotated": rotated, "opts": self.opts},
        )
        add_never_cache_headers(response)  # no copy of the keys in a browser or proxy cache
        return response
