"""Room reads for socket connects: cached, misses batched into one query, misses not cached."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.db import DatabaseError

from rooms import services
from rooms.models import Room, RoomKind

pytestmark = [pytest.mark.django_db(transaction=True)]


@database_sync_to_async
def make_rooms(*slugs: str) -> None:
    for slug in slugs:
        Room.objects.create(slug=slug, title=slug.upper(), kind=RoomKind.MESH)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The slugs of each query the reader makes (the real query still runs)."""
    seen: list[list[str]] = []
    real = services.read_rooms

    def counting(slugs: list[str]) -> dict[str, Room]:
        seen.append(sorted(slugs))
        return real(slugs)

    monkeypatch.setattr(services, "read_rooms", counting)
    services.forget_room()
    yield seen
    services.forget_room()


async def test_concurrent_misses_share_one_query(reads: list[list[str]]) -> None:
    await make_rooms("a", "b", "c")
    first = asyncio.ensure_future(services.aget_room("a"))
    await asyncio.sleep(0)  # "a" is being read; the rest queue behind it
    rest = await asyncio.gather(*(services.aget_room(s) for s in ("b", "c", "b", "nope")))
    assert (await first).slug == "a"
    assert [r.slug if r else None for r in rest] == ["b", "c", "b", None]
    assert reads == [["a"], ["b", "c", "nope"]]


async def test_found_rooms_are_cached_and_misses_are_not(reads: list[list[str]]) -> None:
    await make_rooms("here")
    assert (await services.aget_room("here")).title == "HERE"
    assert await services.aget_room("later") is None
    await make_rooms("later")  # created after a miss: joinable at once
    assert (await services.aget_room("here")).slug == "here"  # cache hit, no query
    assert (await services.aget_room("later")).slug == "later"
    assert reads == [["here"], ["later"], ["later"]]


async def test_a_closed_room_is_seen_after_save(reads: list[list[str]]) -> None:
    await make_rooms("r")
    assert (await services.aget_room("r")).is_open

    @database_sync_to_async
    def close() -> None:
        room = Room.objects.get(slug="r")
        room.is_open = False
        room.save()  # drops the cached copy (rooms/apps.py signals)

    await close()
    assert not (await services.aget_room("r")).is_open


async def test_a_failed_read_fails_its_own_callers_only(
    reads: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_rooms("ok")
    counting = services.read_rooms

    def failing(slugs: list[str]) -> dict[str, Room]:
        if "broken" in slugs:
            raise DatabaseError("connection lost")  # twice: the reader retries once
        return counting(slugs)

    monkeypatch.setattr(services, "read_rooms", failing)
    first = asyncio.ensure_future(services.aget_room("broken"))
    await asyncio.sleep(0)  # "broken" is being read; "ok" queues behind it
    behind = asyncio.ensure_future(services.aget_room("ok"))
    with pytest.raises(DatabaseError):
        await first
    assert (await behind).slug == "ok"
    await make_rooms("later")
    assert (await services.aget_room("later")).slug == "later"  # the reader carries on
    assert reads == [["ok"], ["later"]]
