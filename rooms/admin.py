from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from rooms.models import Room
from rooms.services import set_room_open


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("title", "slug", "kind", "capacity", "is_open", "created_by_name", "created_at")
    list_filter = ("kind", "is_open")
    search_fields = ("title", "slug", "created_by", "created_by_name")
    readonly_fields = ("created_at", "created_by", "created_by_name")
    prepopulated_fields = {"slug": ("title",)}
    actions = ("close_rooms", "open_rooms")
    date_hierarchy = "created_at"

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
