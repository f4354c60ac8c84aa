"""Presence across two real Daphne processes sharing one Redis: a kill -9, a burst of joins."""

import asyncio
import json
import time

import pytest
import redis
import websockets

from tests.integration.test_ws_auth_daphne import page_token

TTL = 4  # seconds: the expiry window under test (kept short so the test is quick)


def start_two(redis_env, daphne_factory, ttl):
    """Two Daphne processes, one SQLite file, one Redis (isolated prefixes)."""
    env = {**redis_env, "PRESENCE_TTL": str(ttl), "PRESENCE_SWEEP_INTERVAL": "1"}
    first = daphne_factory(env)
    second = daphne_factory(env, same_db_as=first)
    first.manage(
        "shell",
        "-c",
        "from rooms.models import Room; "
        "Room.objects.create(slug='crash', title='Crash', kind='mesh'); "
        "[Room.objects.create(slug=f'burst{i}', title=f'Burst {i}', kind='mesh', capacity=4)"
        " for i in range(3)]",
    )
    return first, second, env


@pytest.fixture
def two_servers(redis_env, daphne_factory):
    return start_two(redis_env, daphne_factory, TTL)


async def recv_until(ws, predicate, within):
    """Read messages until one satisfies ``predicate``; return it (or fail on timeout)."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("expected message did not arrive")
        message = json.loads(await asyncio.wait_for(ws.recv(), remaining))
        if predicate(message):
            return message


def test_lobby_on_one_process_sees_joins_and_crash_leaves_on_the_other(two_servers, redis_url):
    first, second, env = two_servers

    async def scenario():
        token1, _ = page_token(first)
        lobby = await websockets.connect(
            f"{first.ws_url}/ws/lobby/?token={token1}", origin=first.url
        )
        await recv_until(lobby, lambda m: m["type"] == "lobby-state", 30)

        room_sockets = []
        for _ in range(2):
            token2, _ = page_token(second)
            ws = await websockets.connect(
                f"{second.ws_url}/ws/rooms/crash/?token={token2}", origin=second.url
            )
            welcome = await recv_until(ws, lambda m: m["type"] == "welcome", 30)
            room_sockets.append((ws, welcome["you"]["peer"]))

        joined = set()
        while len(joined) < 2:
            delta = await recv_until(lobby, lambda m: m["type"] == "presence", 30)
            assert delta["event"] == "join"
            joined.add(delta["peer"]["peer"])
        assert joined == {peer for _, peer in room_sockets}

        second.kill()  # SIGKILL: no disconnect handler runs on that process
        killed_at = time.monotonic()
        left = set()
        while len(left) < 2:
            delta = await recv_until(lobby, lambda m: m["type"] == "presence", TTL + 30)
            assert delta["event"] == "leave"
            left.add(delta["peer"]["peer"])
        elapsed = time.monotonic() - killed_at
        assert left == joined

        token3, _ = page_token(first)
        async with websockets.connect(
            f"{first.ws_url}/ws/lobby/?token={token3}", origin=first.url
        ) as fresh:
            state = await recv_until(fresh, lambda m: m["type"] == "lobby-state", 30)
        await lobby.close()
        return state, elapsed

    state, elapsed = asyncio.run(scenario())
    assert state["rooms"] == {}
    print(f"ghosts removed {elapsed:.1f} s after kill -9 (ttl {TTL} s)")
    keys = redis.Redis.from_url(redis_url).scan_iter(match=f"{env['PRESENCE_KEY_PREFIX']}*")
    # process leases live PRESENCE_LEASE_TTL, the operation clock 2 * ttl, by design
    # (presence.backends.base, .redis)
    leftover = [key for key in keys if b":lease:" not in key and not key.endswith(b":clock")]
    assert leftover == []


def test_lobby_gets_a_burst_of_joins_on_the_other_process_at_once(redis_env, daphne_factory):
    """Regression: joins announced while the lobby's group_send was in flight waited for the
    next presence event on their process (a lobby page missed 10 peers for 22 s). A long
    ttl keeps such events (expiry, take-backs) far away: the deltas must not need one. The
    wait allowed is generous for a loaded machine and still a third of that ttl, so a delta
    held back for the next event cannot pass."""
    first, second, _ = start_two(redis_env, daphne_factory, ttl=60)
    peers = 10

    async def scenario():
        token, _ = page_token(first)
        lobby = await websockets.connect(
            f"{first.ws_url}/ws/lobby/?token={token}", origin=first.url
        )
        await recv_until(lobby, lambda m: m["type"] == "lobby-state", 30)
        tokens = [page_token(second)[0] for _ in range(peers)]

        async def join(i: int):
            ws = await websockets.connect(
                f"{second.ws_url}/ws/rooms/burst{i % 3}/?token={tokens[i]}", origin=second.url
            )
            welcome = await recv_until(ws, lambda m: m["type"] == "welcome", 30)
            return ws, welcome["you"]["peer"]

        sockets = await asyncio.gather(*(join(i) for i in range(peers)))
        joined_at = time.monotonic()
        seen = set()
        try:
            while len(seen) < peers:  # nothing else happens on either process meanwhile
                within = joined_at + 20 - time.monotonic()
                delta = await recv_until(lobby, lambda m: m["type"] == "presence", within)
                assert delta["event"] == "join"
                seen.add(delta["peer"]["peer"])
        finally:
            for ws, _ in sockets:
                await ws.close()
            await lobby.close()
        return seen, {peer for _, peer in sockets}, time.monotonic() - joined_at

    seen, expected, waited = asyncio.run(scenario())
    assert seen == expected
    print(f"last of {peers} join deltas {waited:.2f} s after the last welcome")
