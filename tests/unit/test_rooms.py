"""Room model validation and room services."""

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied, ValidationError

from identity.services import Identity
from rooms.models import Room, RoomKind
from rooms.services import (
    RoomKindConflict,
    get_or_create_room,
    list_rooms,
    set_room_open,
    slug_for_name,
)

pytestmark = pytest.mark.django_db
ALICE = Identity(id="a" * 16, name="alice")


@pytest.mark.parametrize(
    ("kind", "expected"), [(RoomKind.MESH, 3), (RoomKind.RELAY, 2), (RoomKind.ECHO, 1)]
)
def test_capacity_defaults_by_kind(kind, expected):
    room = Room(slug="r1", title="R1", kind=kind)
    room.full_clean()
    assert room.capacity == expected
    room.save()
    assert Room.objects.get(slug="r1").capacity == expected


@pytest.mark.parametrize(
    ("kind", "capacity", "ok"),
    [
        (RoomKind.MESH, 1, False),
        (RoomKind.MESH, 2, True),
        (RoomKind.MESH, 4, True),
        (RoomKind.MESH, 5, False),
        (RoomKind.RELAY, 3, False),
        (RoomKind.RELAY, 2, True),
        (RoomKind.ECHO, 2, False),
        (RoomKind.ECHO, 1, True),
    ],
)
def test_capacity_bounds_per_kind(kind, capacity, ok):
    room = Room(slug="r", title="R", kind=kind, capacity=capacity)
    if ok:
        room.full_clean()
    else:
        with pytest.raises(ValidationError) as exc:
            room.full_clean()
        assert "capacity" in exc.value.message_dict


@pytest.mark.parametrize("slug", ["-abc", "abc-", "ABC", "a_b", "a b", "x" * 49, "é"])
def test_bad_slugs_rejected(slug):
    with pytest.raises(ValidationError) as exc:
        Room(slug=slug, title="t", kind=RoomKind.MESH).full_clean()
    assert "slug" in exc.value.message_dict


@pytest.mark.parametrize("slug", ["a", "team-sync", "r2d2", "x" * 48])
def test_good_slugs_accepted(slug):
    Room(slug=slug, title="t", kind=RoomKind.MESH).full_clean()


def test_unknown_kind_rejected():
    with pytest.raises(ValidationError) as exc:
        Room(slug="k", title="t", kind="party", capacity=3).full_clean()
    assert "kind" in exc.value.message_dict


def test_create_then_join_by_name():
    first = get_or_create_room("  Team   Sync! ", RoomKind.MESH, ALICE)
    assert first.created
    assert first.room.slug == "team-sync"
    assert first.room.title == "Team Sync!"
    assert first.room.created_by == ALICE.id
    again = get_or_create_room("team sync", RoomKind.MESH, Identity(id="b" * 16, name="bob"))
    assert not again.created
    assert again.room.pk == first.room.pk
    assert Room.objects.count() == 1


def test_same_name_other_kind_is_refused():
    get_or_create_room("Studio", RoomKind.ECHO, ALICE)
    with pytest.raises(RoomKindConflict):
        get_or_create_room("studio", RoomKind.MESH, ALICE)


@pytest.mark.parametrize("name", ["", "   ", "!!!", "x" * 81])
def test_bad_names_rejected(name):
    with pytest.raises(ValidationError):
        get_or_create_room(name, RoomKind.MESH, ALICE)


def test_unknown_kind_in_service_rejected():
    with pytest.raises(ValidationError):
        get_or_create_room("ok", "party", ALICE)


def test_slug_for_name_truncates_cleanly():
    slug = slug_for_name("a" * 47 + " b")
    assert len(slug) <= 48
    assert not slug.endswith("-")


def test_only_staff_can_close():
    room = get_or_create_room("closable", RoomKind.MESH, ALICE).room
    with pytest.raises(PermissionDenied):
        set_room_open(room, False, AnonymousUser())
    visitor = User.objects.create_user("v", password="x")
    with pytest.raises(PermissionDenied):
        set_room_open(room, False, visitor)
    staff = User.objects.create_user("s", password="x", is_staff=True)
    set_room_open(room, False, staff)
    room.refresh_from_db()
    assert room.is_open is False
    assert room not in list_rooms(RoomKind.MESH)
    assert room in list_rooms(RoomKind.MESH, include_closed=True)


@pytest.mark.parametrize(
    ("kind", "socket_path"),
    [(RoomKind.MESH, "/ws/rooms/"), (RoomKind.ECHO, "/ws/media/"), (RoomKind.RELAY, "/ws/media/")],
)
def test_room_page_socket_path_by_kind(client, kind, socket_path):
    """Echo and relay pages use /ws/media/ (routed to media processes), mesh /ws/rooms/."""
    room = get_or_create_room(f"Path {kind}", kind, ALICE).room
    html = client.get(f"/rooms/{room.slug}/").content.decode()
    assert f'data-ws-path="{socket_path}{room.slug}/"' in html
