"""Room and lobby sockets in-process: join/welcome, peer-joined/left, capacity, lobby deltas."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from identity.services import Identity
from presence import services as presence
from rooms.models import Room, RoomKind
from rtcsite.ws.codes import CloseCode
from signaling.media import peer as peer_module
from tests.support.ws import communicator

pytestmark = [pytest.mark.django_db(transaction=True)]

PEOPLE = [Identity(id=f"{i:016x}", name=f"user{i}") for i in range(1, 6)]


@database_sync_to_async
def make_room(slug="r1", kind=RoomKind.MESH, **kw) -> Room:
    return Room.objects.create(slug=slug, title=slug.upper(), kind=kind, **kw)


async def join(slug, who):
    comm = communicator(f"/ws/rooms/{slug}/", identity=who)
    connected, _ = await comm.connect()
    assert connected
    return comm, await comm.receive_json_from()


async def test_welcome_then_peer_joined_and_left():
    await make_room()
    a, welcome_a = await join("r1", PEOPLE[0])
    assert welcome_a["type"] == "welcome"
    assert welcome_a["peers"] == []
    assert welcome_a["you"]["name"] == "user1"
    assert welcome_a["room"]["capacity"] == 3
    assert welcome_a["ice_servers"] == []

    b, welcome_b = await join("r1", PEOPLE[1])
    assert [p["peer"] for p in welcome_b["peers"]] == [welcome_a["you"]["peer"]]
    assert welcome_b["peers"][0]["name"] == "user1"
    joined = await a.receive_json_from()
    assert joined["type"] == "peer-joined"
    assert joined["peer"] == welcome_b["you"]["peer"]
    assert joined["name"] == "user2"

    await b.disconnect()
    left = await a.receive_json_from()
    assert left == {"type": "peer-left", "peer": welcome_b["you"]["peer"]}
    await a.disconnect()


async def test_capacity_is_enforced_and_refusal_explained():
    await make_room()
    comms = [await join("r1", who) for who in PEOPLE[:3]]
    fourth = communicator("/ws/rooms/r1/", identity=PEOPLE[3])
    await fourth.connect()
    error = await fourth.receive_json_from()
    assert error["type"] == "error"
    assert error["code"] == "room-full"
    assert (await fourth.receive_output())["code"] == CloseCode.ROOM_FULL
    for comm, _ in comms:
        await comm.disconnect()


async def test_concurrent_joins_never_exceed_capacity():
    await make_room("pair", capacity=2)

    async def attempt(who):
        comm = communicator("/ws/rooms/pair/", identity=who)
        await comm.connect()
        first = await comm.receive_json_from()
        return comm, first["type"] == "welcome"

    results = await asyncio.gather(*(attempt(who) for who in PEOPLE))
    assert sum(ok for _, ok in results) == 2
    for comm, _ in results:
        await comm.disconnect()


async def test_two_tabs_of_one_user_are_two_peers():
    await make_room()
    a, wa = await join("r1", PEOPLE[0])
    b, wb = await join("r1", PEOPLE[0])
    assert wa["you"]["peer"] != wb["you"]["peer"]
    assert wb["peers"][0]["user"] == PEOPLE[0].id
    await a.disconnect()
    await b.disconnect()


async def test_unknown_and_closed_rooms_refused():
    comm = communicator("/ws/rooms/nope/", identity=PEOPLE[0])
    await comm.connect()
    assert (await comm.receive_json_from())["code"] == "not-found"
    assert (await comm.receive_output())["code"] == CloseCode.NOT_FOUND
    await make_room("shut", is_open=False)
    comm = communicator("/ws/rooms/shut/", identity=PEOPLE[0])
    await comm.connect()
    assert (await comm.receive_json_from())["code"] == "room-closed"
    assert (await comm.receive_output())["code"] == CloseCode.FORBIDDEN


@pytest.mark.parametrize(
    ("kind", "wrong", "right"),
    [(RoomKind.MESH, "media", "rooms"), (RoomKind.ECHO, "rooms", "media")],
)
async def test_each_room_kind_is_refused_on_the_other_products_path(kind, wrong, right):
    """Mesh rooms live on /ws/rooms/, echo/relay rooms on /ws/media/ (the media processes'
    path): the other path refuses with wrong-path and 4013, and leaves no place behind."""
    slug = f"{kind}-paths"
    await make_room(slug, kind)
    comm = communicator(f"/ws/{wrong}/{slug}/", identity=PEOPLE[0])
    await comm.connect()
    error = await comm.receive_json_from()
    assert error["code"] == "wrong-path"
    assert f"/ws/{right}/{slug}/" in error["message"]
    assert (await comm.receive_output())["code"] == CloseCode.WRONG_PATH
    assert await presence.members(slug) == []
    assert peer_module.live_peers() == set()
    comm = communicator(f"/ws/{right}/{slug}/", identity=PEOPLE[0])
    await comm.connect()
    assert (await comm.receive_json_from())["type"] == "welcome"
    await comm.disconnect()


async def test_media_state_relayed_and_validated():
    await make_room()
    a, _ = await join("r1", PEOPLE[0])
    b, _ = await join("r1", PEOPLE[1])
    await a.receive_json_from()  # peer-joined
    await b.send_json_to({"type": "media", "audio": False, "video": True})
    relayed = await a.receive_json_from()
    assert relayed["type"] == "peer-media"
    assert relayed["media"] == {"audio": False, "video": True}
    await b.send_json_to({"type": "media", "audio": "off"})
    assert (await b.receive_json_from())["code"] == "bad-message"
    await b.send_json_to({"type": "ping", "t": 1})
    assert (await b.receive_json_from())["type"] == "pong"  # heartbeat, connection fine
    await a.disconnect()
    await b.disconnect()


async def test_lobby_snapshot_and_deltas():
    await make_room()
    lobby = communicator("/ws/lobby/", identity=PEOPLE[4])
    await lobby.connect()
    assert (await lobby.receive_json_from())["type"] == "hello"
    state = await lobby.receive_json_from()
    assert (state["type"], state["rooms"], state["names_per_card"]) == ("lobby-state", {}, 3)

    a, wa = await join("r1", PEOPLE[0])
    delta = await lobby.receive_json_from()
    assert delta["type"] == "presence"
    assert delta["event"] == "join"
    assert delta["room"] == "r1"
    assert delta["count"] == 1
    assert delta["peer"]["name"] == "user1"

    late = communicator("/ws/lobby/", identity=PEOPLE[3])
    await late.connect()
    await late.receive_json_from()
    state = await late.receive_json_from()
    assert state["rooms"]["r1"]["count"] == 1
    assert state["rooms"]["r1"]["participants"][0]["peer"] == wa["you"]["peer"]

    await a.disconnect()
    left = await lobby.receive_json_from()
    assert (left["event"], left["count"]) == ("leave", 0)
    await lobby.disconnect()
    await late.disconnect()


async def test_lobby_gets_every_delta_of_a_burst_in_order():
    """Deltas beyond the burst allowance are coalesced (LOBBY_DELTA_INTERVAL), never lost or
    reordered: each still arrives as its own ``presence`` message."""
    for i in range(5):
        await make_room(f"b{i}", capacity=2)
    lobby = communicator("/ws/lobby/", identity=PEOPLE[4])
    await lobby.connect()
    await lobby.receive_json_from()
    await lobby.receive_json_from()
    joined = await asyncio.gather(*(join(f"b{i}", PEOPLE[i]) for i in range(4)))
    for comm, _ in joined:
        await comm.disconnect()
    events = [await lobby.receive_json_from(timeout=5) for _ in range(8)]
    peers = {welcome["you"]["peer"]: f"b{i}" for i, (_, welcome) in enumerate(joined)}
    for peer, room in peers.items():
        mine = [(e["event"], e["room"], e["count"]) for e in events if e["peer"]["peer"] == peer]
        assert mine == [("join", room, 1), ("leave", room, 0)]
    assert await lobby.receive_nothing(timeout=0.2)
    await lobby.disconnect()
