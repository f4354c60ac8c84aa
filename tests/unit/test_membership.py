"""presence.membership through the sockets that use it: take-back on heartbeat, room-full on
take-back, viewers counted, leave once."""

import pytest
from channels.db import database_sync_to_async

from identity.services import Identity
from presence import services as presence
from rooms.models import Room, RoomKind
from rtcsite.ws.codes import CloseCode
from streaming.models import Stream
from tests.support.ws import communicator

pytestmark = [pytest.mark.django_db(transaction=True)]

PEOPLE = [Identity(id=f"{i:016x}", name=f"user{i}") for i in range(1, 5)]


@database_sync_to_async
def make_room(slug: str, capacity: int) -> Room:
    return Room.objects.create(slug=slug, title=slug, kind=RoomKind.MESH, capacity=capacity)


async def join(slug: str, who: Identity):
    comm = communicator(f"/ws/rooms/{slug}/", identity=who)
    assert (await comm.connect())[0]
    welcome = await comm.receive_json_from()
    assert welcome["type"] == "welcome", welcome
    return comm, welcome


async def peer_ids(room: str) -> set[str]:
    return {p.peer_id for p in await presence.members(room)}


async def test_a_heartbeat_takes_back_an_expired_place_and_the_room_hears_it():
    await make_room("back", 3)
    a, wa = await join("back", PEOPLE[0])
    b, _ = await join("back", PEOPLE[1])
    await a.receive_json_from()  # peer-joined (b)
    me = wa["you"]["peer"]
    # the place vanished (as if expired and swept while the server was too busy)
    await presence.leave("back", me)
    assert (await b.receive_json_from())["type"] == "peer-left"
    assert me not in await peer_ids("back")

    await a.send_json_to({"type": "ping", "t": 7})
    assert await a.receive_json_from() == {"type": "pong", "t": 7}
    assert me in await peer_ids("back")
    joined = await b.receive_json_from()
    assert joined["type"] == "peer-joined" and joined["peer"] == me
    await a.disconnect()
    await b.disconnect()


async def test_a_take_back_into_a_room_that_filled_up_is_refused_and_leaves_nothing():
    await make_room("gone", 2)
    a, wa = await join("gone", PEOPLE[0])
    await presence.leave("gone", wa["you"]["peer"])
    b, _ = await join("gone", PEOPLE[1])
    c, _ = await join("gone", PEOPLE[2])
    await a.send_json_to({"type": "ping"})
    error = await a.receive_json_from()
    while error["type"] == "peer-joined":  # b and c, heard while a was still in the group
        error = await a.receive_json_from()
    assert error["code"] == "room-full"
    assert (await a.receive_output())["code"] == CloseCode.ROOM_FULL
    assert len(await peer_ids("gone")) == 2
    assert wa["you"]["peer"] not in await peer_ids("gone")
    await b.disconnect()
    await c.disconnect()


async def test_viewers_are_places_without_capacity_and_leave_once():
    await database_sync_to_async(Stream.objects.create)(slug="show-1", title="Show")
    viewers = []
    for who in PEOPLE:
        comm = communicator("/ws/streams/show-1/watch/", identity=who)
        assert (await comm.connect())[0]
        welcome = await comm.receive_json_from()
        assert welcome["viewers"] == len(viewers) + 1  # counted at once, this one included
        assert welcome["heartbeat_interval"] > 0
        viewers.append(comm)
    assert len(await presence.members("stream.show-1")) == len(PEOPLE)
    first = viewers.pop(0)
    await first.disconnect()
    assert len(await presence.members("stream.show-1")) == len(PEOPLE) - 1
    for comm in viewers:
        await comm.disconnect()
    assert await presence.members("stream.show-1") == []
