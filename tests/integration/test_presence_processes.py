"""Presence across two real Daphne processes sharing one Redis, including a kill -9."""

import asyncio
import json
import time

import pytest
import redis
import websockets

from tests.integration.test_ws_auth_daphne import page_token

TTL = 4  # seconds: the expiry window under test (kept short so the test is quick)


@pytest.fixture
def two_servers(redis_env, daphne_factory):
    """Two Daphne processes, one SQLite file, one Redis (isolated prefixes)."""
    env = {**redis_env, "PRESENCE_TTL": str(TTL), "PRESENCE_SWEEP_INTERVAL": "1"}
    first = daphne_factory(env)
    second = daphne_factory(env, same_db_as=first)
    first.manage(
        "shell",
        "-c",
        "from rooms.models import Room; "
        "Room.objects.create(slug='crash', title='Crash', kind='mesh')",
    )
    return first, second, env


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
    leftover = list(
        redis.Redis.from_url(redis_url).scan_iter(match=f"{env['PRESENCE_KEY_PREFIX']}*")
    )
    assert leftover == []
