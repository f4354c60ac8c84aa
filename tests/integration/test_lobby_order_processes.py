"""Lobby counts made by two real Daphne processes sharing one Redis reach a lobby socket in
any order; their ``at`` (the presence store's time of each join or leave) orders them.

Issue 15's soak: after 300 joins over two processes, 6-14 of 100 lobby cards kept a stale
count (join 1, join 3, join 2 arrived: the card showed 2 of 3). Here every room's joins and
leaves are split across both processes and made concurrently; sorted by ``at`` the counts
the lobby received must be exactly 1, 2, ... and back to 0, so the newest is the truth.
"""

import asyncio
import itertools

import websockets

from tests.integration.test_presence_processes import recv_until, start_two
from tests.integration.test_ws_auth_daphne import page_token

ROOMS = 10
PER_ROOM = 6  # joins per room, alternating between the two processes


def by_time(deltas):
    """room -> its deltas' counts in the order of their ``at``."""
    ordered = sorted(deltas, key=lambda d: (d["room"], d["at"]))
    return {
        room: [d["count"] for d in group]
        for room, group in itertools.groupby(ordered, key=lambda d: d["room"])
    }


def test_lobby_deltas_of_two_processes_are_ordered_by_their_time(redis_env, daphne_factory):
    servers = start_two(redis_env, daphne_factory, ttl=60)[:2]
    servers[0].create_rooms(*((f"order{i}", "mesh", PER_ROOM) for i in range(ROOMS)))
    tokens = [page_token(server)[0] for server in servers]

    async def scenario():
        first = servers[0]
        lobby = await websockets.connect(
            f"{first.ws_url}/ws/lobby/?token={tokens[0]}", origin=first.url
        )
        state = await recv_until(lobby, lambda m: m["type"] == "lobby-state", 30)

        async def join(i: int):
            k = i % 2
            ws = await websockets.connect(
                f"{servers[k].ws_url}/ws/rooms/order{i % ROOMS}/?token={tokens[k]}",
                origin=servers[k].url,
            )
            await recv_until(ws, lambda m: m["type"] == "welcome", 30)
            return ws

        async def deltas(n: int):
            return [
                await recv_until(lobby, lambda m: m["type"] == "presence", 30) for _ in range(n)
            ]

        sockets = await asyncio.gather(*(join(i) for i in range(ROOMS * PER_ROOM)))
        joins = await deltas(ROOMS * PER_ROOM)
        async with websockets.connect(
            f"{first.ws_url}/ws/lobby/?token={tokens[0]}", origin=first.url
        ) as fresh:
            after = await recv_until(fresh, lambda m: m["type"] == "lobby-state", 30)
        await asyncio.gather(*(ws.close() for ws in sockets))
        leaves = await deltas(ROOMS * PER_ROOM)
        await lobby.close()
        return state, joins, after, leaves

    state, joins, after, leaves = asyncio.run(scenario())
    rooms = [f"order{i}" for i in range(ROOMS)]
    assert {d["event"] for d in joins} == {"join"} and {d["event"] for d in leaves} == {"leave"}
    assert by_time(joins) == {room: list(range(1, PER_ROOM + 1)) for room in rooms}
    assert by_time(leaves) == {room: list(range(PER_ROOM - 1, -1, -1)) for room in rooms}
    assert len({d["at"] for d in joins + leaves}) == 2 * ROOMS * PER_ROOM
    # a snapshot is ordered with the deltas: after every join it made, before every leave
    assert state["at"] < min(d["at"] for d in joins)
    assert max(d["at"] for d in joins) < after["at"] < min(d["at"] for d in leaves)
    assert {room: after["rooms"][room]["count"] for room in rooms} == dict.fromkeys(rooms, PER_ROOM)
    # what a page keeping the last delta it got (before this fix) would have shown
    last = {d["room"]: d["count"] for d in joins}
    stale = sorted(room for room in rooms if last[room] != PER_ROOM)
    print(f"{len(stale)} of {ROOMS} rooms' last-arrived join delta was stale: {stale}")
