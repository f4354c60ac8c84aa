"""Read-only admin page of who is where right now (from the presence backend)."""

from __future__ import annotations

import datetime as dt

from asgiref.sync import async_to_sync
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from presence.backends import get_backend
from presence.models import LivePresence


async def _current() -> list:
    backend = get_backend()
    rows = []
    for slug in sorted(await backend.room_counts()):
        rows.extend(await backend.list_room(slug))
    return rows


@admin.register(LivePresence)
class LivePresenceAdmin(admin.ModelAdmin):
    """Room, peer, name, since, process: one row per live connection."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        presences = async_to_sync(_current)()
        rows = [
            {
                "room": p.room,
                "peer": p.peer_id,
                "user": p.user_id,
                "name": p.name,
                "since": dt.datetime.fromtimestamp(p.joined_at, tz=dt.UTC),
                "expires": dt.datetime.fromtimestamp(p.expires_at, tz=dt.UTC),
                "process": p.process,
                "media": ", ".join(k for k, v in sorted(p.media.items()) if v) or "—",
            }
            for p in presences
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Live presence",
            "opts": self.model._meta,
            "rows": rows,
            "backend": type(get_backend()).__name__,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/presence/livepresence/change_list.html", context)
