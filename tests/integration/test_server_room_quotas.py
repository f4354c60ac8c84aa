"""Server peers are capped per identity and per client address, not only per process: one
client opening many echo rooms gets ``too-many-sessions`` while everyone else is still
served. Real Daphne, real aiortc peers (``ServerRoomClient``) over real WebSockets."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack, asynccontextmanager

import websockets

from tests.integration.test_presence_processes import recv_until
from tests.integration.test_ws_auth_daphne import page_token
from tests.support.media import astronaut_frame
from tests.support.participant import ServerRoomClient

PICTURE, _ = astronaut_frame(320, 240)
WAIT = 60  # seconds: generous, the machine is shared


def make_echo_rooms(server, count: int) -> None:
    server.manage(
        "shell",
        "-c",
        "from rooms.models import Room\n"
        f"for i in range({count}):\n"
        "    Room.objects.create(slug=f'e{i}', title=f'E{i}', kind='echo', capacity=1)",
    )


@asynccontextmanager
async def echo_session(server, slug: str, token: str):
    """A joined echo room socket whose ServerRoomClient has sent its offer."""
    async with websockets.connect(
        f"{server.ws_url}/ws/media/{slug}/?token={token}", origin=server.url
    ) as ws:
        await recv_until(ws, lambda m: m["type"] == "welcome", WAIT)

        async def send(message):
            await ws.send(json.dumps(message))

        async def receive():
            return json.loads(await ws.recv())

        client = ServerRoomClient(send, ServerRoomClient.default_tracks(PICTURE))
        client.pump(receive)
        try:
            await client.offer()
            yield client
        finally:
            await client.close()


async def outcome(client: ServerRoomClient) -> str:
    """``answered``, or the code of the error that answered the offer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while loop.time() < deadline:
        if client.answered.is_set():
            return "answered"
        offer_errors = [e for e in client.errors if e.get("ref") == "offer"]
        if offer_errors:
            return offer_errors[0]["code"]
        await asyncio.sleep(0.05)
    raise AssertionError("the offer was neither answered nor refused")


def test_one_identity_cannot_make_everyone_else_server_busy(daphne_factory):
    server = daphne_factory(
        {
            "SERVER_ROOM_MAX_PEERS": "3",
            "SERVER_ROOM_MAX_PEERS_PER_IDENTITY": "2",
            "SERVER_ROOM_MAX_PEERS_PER_ADDRESS": "8",
        }
    )
    make_echo_rooms(server, 4)

    async def scenario():
        token_a, _ = page_token(server)
        token_b, _ = page_token(server)
        async with AsyncExitStack() as stack:
            ada = [
                await stack.enter_async_context(echo_session(server, f"e{i}", token_a))
                for i in range(3)
            ]
            assert [await outcome(c) for c in ada[:2]] == ["answered", "answered"]
            assert await outcome(ada[2]) == "too-many-sessions"
            refusal = next(e for e in ada[2].errors if e.get("ref") == "offer")
            assert refusal["limit"] == 2 and "identity" in refusal["message"]
            # the process still has a peer for someone else
            bob = await stack.enter_async_context(echo_session(server, "e3", token_b))
            assert await outcome(bob) == "answered"

    asyncio.run(scenario())


def test_fresh_identities_from_one_address_share_its_cap(daphne_factory):
    server = daphne_factory(
        {
            "SERVER_ROOM_MAX_PEERS": "8",
            "SERVER_ROOM_MAX_PEERS_PER_IDENTITY": "2",
            "SERVER_ROOM_MAX_PEERS_PER_ADDRESS": "2",
        }
    )
    make_echo_rooms(server, 4)

    async def scenario():
        tokens = [page_token(server)[0] for _ in range(3)]  # three minted identities
        async with AsyncExitStack() as stack:
            sessions = [
                await stack.enter_async_context(echo_session(server, f"e{i}", token))
                for i, token in enumerate(tokens)
            ]
            assert [await outcome(c) for c in sessions[:2]] == ["answered", "answered"]
            assert await outcome(sessions[2]) == "too-many-sessions"
            refusal = next(e for e in sessions[2].errors if e.get("ref") == "offer")
            assert "address" in refusal["message"]

        # closed sessions give their places back
        async with echo_session(server, "e3", tokens[2]) as again:
            assert await outcome(again) == "answered"

    asyncio.run(scenario())
