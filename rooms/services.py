"""Room services: create-or-join by name, listing, closing.

Views and consumers call these; they hold the rules (naming, kinds, who may close).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from identity.services import Identity
from rooms.models import Room, RoomKind

MAX_TITLE_LENGTH = 80


class RoomKindConflict(ValidationError):
    """A room of that name exists with another kind."""


@dataclass(frozen=True)
class JoinResult:
    room: Room
    created: bool


def slug_for_name(name: str) -> str:
    """The URL slug a room name maps to (``"Team Sync!"`` → ``team-sync``)."""
    return slugify(name)[:48].strip("-")


def clean_room_name(raw: str) -> str:
    name = " ".join((raw or "").split())
    if not name:
        raise ValidationError("Give the room a name.", code="required")
    if len(name) > MAX_TITLE_LENGTH:
        raise ValidationError(
            f"Room names are limited to {MAX_TITLE_LENGTH} characters.", code="max_length"
        )
    if not slug_for_name(name):
        raise ValidationError("The name needs at least one letter or digit.", code="invalid")
    return name


def get_or_create_room(name: str, kind: str, creator: Identity) -> JoinResult:
    """Open the room called ``name`` of ``kind``, creating it if nobody has yet.

    Anyone may create a room. Names map to slugs, so "Team sync" and "team-sync" are the
    same room; asking for an existing name with another kind is refused (one URL, one
    kind). Concurrent creators of the same name both end up in the one room.
    """
    if kind not in RoomKind.values:
        raise ValidationError(f"Unknown room kind {kind!r}.", code="invalid_kind")
    title = clean_room_name(name)
    slug = slug_for_name(title)
    room = Room.objects.filter(slug=slug).first()
    created = False
    if room is None:
        candidate = Room(
            slug=slug, title=title, kind=kind, created_by=creator.id, created_by_name=creator.name
        )
        candidate.full_clean()
        try:
            with transaction.atomic():
                candidate.save()
            room, created = candidate, True
        except IntegrityError:  # lost a race with another creator: join theirs
            room = Room.objects.get(slug=slug)
    if room.kind != kind:
        raise RoomKindConflict(
            f"“{room.title}” is already a {room.get_kind_display().lower()} room.",
            code="kind_conflict",
        )
    return JoinResult(room=room, created=created)


def get_room(slug: str) -> Room | None:
    return Room.objects.filter(slug=slug).first()


def list_rooms(kind: str | None = None, *, include_closed: bool = False) -> list[Room]:
    rooms = Room.objects.all()
    if kind is not None:
        rooms = rooms.filter(kind=kind)
    if not include_closed:
        rooms = rooms.filter(is_open=True)
    return list(rooms.order_by("-created_at")[:200])


def set_room_open(room: Room, is_open: bool, user: AbstractBaseUser | AnonymousUser) -> Room:
    """Open or close a room; only staff may (visitors can create rooms, not close them)."""
    if not (user.is_authenticated and user.is_staff):
        raise PermissionDenied("Only staff can open or close rooms.")
    room.is_open = is_open
    room.save(update_fields=["is_open"])
    return room
