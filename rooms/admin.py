from contextvars import ContextVar

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from presence.backends import get_backend
from rooms.models import Room
from rooms.services import is_listed, set_room_open

_room_counts: ContextVar[dict[str, int]] = ContextVar("room_counts", default={})  # noqa: B039


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = (
        "title",
        "slug",
        "kind",
        "participants",
        "capacity",
        "is_open",
        "pinned",
        "listed",
        "created_by_name",
        "created_at",
        "last_active_at",
    )
    list_filter = ("kind", "is_open", "pinned")
    list_editable = ("pinned",)
    search_fields = ("title", "slug", "created_by", "created_by_name")
    # Rooms made here have no creator (created_by stays empty), so they never expire.
    readonly_fields = ("created_at", "created_by", "created_by_name", "last_active_at")
    prepopulated_fields = {"slug": ("title",)}
    actions = ("close_rooms", "open_rooms")
    date_hierarchy = "created_at"

    def changelist_view(self, request: HttpRequest, extra_context=None):
        # One presence read per page (not per row), visible only to this request.
        token = _room_counts.set(async_to_sync(get_backend().room_counts)())
        try:
            response = super().changelist_view(request, extra_context)
            if hasattr(response, "render"):
                response.render()
            return response
        finally:
            _room_counts.reset(token)

    @admin.display(description="in room")
    def participants(self, room: Room) -> int:
        return _room_counts.get().get(room.slug, 0)

    @admin.display(description="in lobby", boolean=True)
    def listed(self, room: Room) -> bool:
        """False for an idle visitor room: the lobby hides it (it still opens by URL) and
        `manage.py maintain` deletes it after ROOM_IDLE_DELETE_HOURS."""
        return is_listed(room)

    @admin.action(description="Close selected rooms (refuse new joins)")
    def close_rooms(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        for room in queryset:
            set_room_open(room, False, request.user)
        self.message_user(request, f"Closed {queryset.count()} room(s).", messages.SUCCESS)

    @admin.action(description="Open selected rooms")
    def open_rooms(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        for room in queryset:
            set_room_open(room, True, request.user)
        self.message_user(request, f"Opened {queryset.count()} room(s).", messages.SUCCESS)
