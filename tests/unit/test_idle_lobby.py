"""Issue 14.8: visitor rooms and streams left idle leave the lobby (page and snapshot);
pinned rooms and rooms made in admin stay; hidden ones still open by URL; a join brings a
room back, with at most one activity write per ROOM_ACTIVITY_WRITE_SECONDS."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from identity.services import Identity
from rooms.models import Room, RoomKind
from rooms.services import forget_room, get_or_create_room
from streaming.models import Stream, StreamStatus
from tests.support.ws import communicator

pytestmark = [pytest.mark.django_db(transaction=True)]

VISITOR = Identity(id="00000000000000ee", name="visitor")
PEOPLE = [Identity(id=f"{i:016x}", name=f"user{i}") for i in range(1, 4)]


def make_room(slug: str, *, idle_hours: float, by: str = VISITOR.id, **fields) -> Room:
    room = Room.objects.create(slug=slug, title=slug, kind=RoomKind.MESH, created_by=by, **fields)
    set_idle(slug, idle_hours)
    return room


def set_idle(slug: str, hours: float) -> None:
    """As if the last join was ``hours`` ago (an update: no save signal, so forget the cache
    as another process's change would be forgotten after ROOM_CACHE_SECONDS)."""
    Room.objects.filter(slug=slug).update(last_active_at=timezone.now() - timedelta(hours=hours))
    forget_room()


def last_active(slug: str):
    return Room.objects.get(slug=slug).last_active_at


@pytest.fixture
def rooms(settings):
    settings.ROOM_IDLE_HIDE_HOURS = 24
    make_room("old-spam", idle_hours=25)
    make_room("old-pinned", idle_hours=25, pinned=True)
    make_room("old-admin", idle_hours=25, by="")  # made in admin: no creator
    make_room("fresh", idle_hours=1)


def lobby_slugs(client) -> set[str]:
    page = client.get("/")
    assert page.status_code == 200
    text = page.content.decode()
    return {s for s in ("old-spam", "old-pinned", "old-admin", "fresh") if f"/rooms/{s}/" in text}


def test_idle_visitor_rooms_leave_the_lobby_page_but_open_by_url(client, rooms):
    assert lobby_slugs(client) == {"old-pinned", "old-admin", "fresh"}
    assert client.get("/rooms/old-spam/").status_code == 200


def test_idle_hiding_switched_off_with_zero(client, rooms, settings):
    settings.ROOM_IDLE_HIDE_HOURS = 0
    assert lobby_slugs(client) == {"old-spam", "old-pinned", "old-admin", "fresh"}


def test_joining_by_name_brings_a_hidden_room_back(client, rooms):
    before = last_active("old-spam")
    get_or_create_room("old-spam", RoomKind.MESH, PEOPLE[0])
    assert last_active("old-spam") > before
    assert "old-spam" in lobby_slugs(client)


async def test_socket_join_brings_it_back_writing_at_most_once_per_interval(rooms, settings):
    settings.ROOM_ACTIVITY_WRITE_SECONDS = 3600
    before = await database_sync_to_async(last_active)("old-spam")
    first = communicator("/ws/rooms/old-spam/", identity=PEOPLE[0])
    assert (await first.connect())[0]
    assert (await first.receive_json_from())["type"] == "welcome"
    written = await database_sync_to_async(last_active)("old-spam")
    assert written > before
    # a second join within the interval writes nothing (joins are the hot path)
    await database_sync_to_async(Room.objects.filter(slug="old-spam").update)(
        last_active_at=written - timedelta(hours=30)
    )
    second = communicator("/ws/rooms/old-spam/", identity=PEOPLE[1])
    assert (await second.connect())[0]
    assert (await second.receive_json_from())["type"] == "welcome"
    assert await database_sync_to_async(last_active)("old-spam") == written - timedelta(hours=30)
    await first.disconnect()
    await second.disconnect()


async def test_joining_a_room_active_within_the_interval_costs_no_query(rooms, settings):
    """A room created or written lately (the copy at hand says so) is not written again: the
    first joins of a new room cost the connect path no database round trip."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from rooms.services import _activity_due

    settings.ROOM_ACTIVITY_WRITE_SECONDS = 3600
    room = await database_sync_to_async(Room.objects.get)(slug="fresh")
    room.last_active_at = timezone.now() - timedelta(seconds=60)  # written a minute ago
    assert not _activity_due(room)
    stale = await database_sync_to_async(Room.objects.get)(slug="old-spam")
    assert _activity_due(stale)

    def join_fresh():
        with CaptureQueriesContext(connection) as queries:
            get_or_create_room("fresh", RoomKind.MESH, PEOPLE[2])
        return [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]

    await database_sync_to_async(Room.objects.filter(slug="fresh").update)(
        last_active_at=timezone.now()
    )
    forget_room()
    assert await database_sync_to_async(join_fresh)() == []


async def test_lobby_snapshot_leaves_out_occupied_rooms_the_lobby_hides(rooms):
    """Someone sitting in a spam room for days keeps it in presence, not in the lobby."""
    sockets = []
    for slug, who in (("old-spam", PEOPLE[0]), ("old-pinned", PEOPLE[1]), ("fresh", PEOPLE[2])):
        comm = communicator(f"/ws/rooms/{slug}/", identity=who)
        assert (await comm.connect())[0]
        await comm.receive_json_from()
        sockets.append(comm)
    await database_sync_to_async(set_idle)("old-spam", 25)  # nobody joined for a day since
    await database_sync_to_async(set_idle)("old-pinned", 25)
    lobby = communicator("/ws/lobby/", identity=VISITOR)
    assert (await lobby.connect())[0]
    hello = await lobby.receive_json_from()
    assert hello["type"] == "hello", hello
    state = await lobby.receive_json_from()
    assert state["type"] == "lobby-state"
    assert set(state["rooms"]) == {"old-pinned", "fresh"}
    await lobby.disconnect()
    for comm in sockets:
        await comm.disconnect()


def test_streams_left_idle_leave_the_lobby_but_open_by_url(client, settings):
    settings.STREAM_IDLE_HIDE_HOURS = 6
    for slug, status, hours in [
        ("idle-old", StreamStatus.IDLE, 7),
        ("idle-new", StreamStatus.IDLE, 1),
        ("live-old", StreamStatus.LIVE, 7),  # a live stream saves progress; never hidden
    ]:
        Stream.objects.create(slug=slug, title=slug, status=status, owner_id=VISITOR.id)
        Stream.objects.filter(slug=slug).update(updated_at=timezone.now() - timedelta(hours=hours))
    text = client.get("/").content.decode()
    assert "/streams/idle-new/" in text and "/streams/live-old/" in text
    assert "/streams/idle-old/" not in text
    assert "/streams/idle-old/" not in client.get("/streams/").content.decode()
    assert client.get("/streams/idle-old/").status_code == 200
