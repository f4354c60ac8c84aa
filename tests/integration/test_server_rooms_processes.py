"""Room affinity across two real Daphne processes sharing one Redis: a relay room's two
server peers must be in one process, so a partner arriving on the other is refused."""

import asyncio
import json
import os

import websockets

from tests.integration import test_presence_processes
from tests.integration.test_presence_processes import recv_until
from tests.integration.test_ws_auth_daphne import page_token
from tests.support.media import astronaut_frame
from tests.support.participant import ServerRoomClient

two_servers = test_presence_processes.two_servers  # fixture: two Daphnes, one SQLite + Redis
PICTURE, _ = astronaut_frame(640, 480)


def test_relay_partner_on_another_process_is_refused_with_a_clear_error(two_servers):
    first, second, _env = two_servers
    first.manage(
        "shell",
        "-c",
        "from rooms.models import Room; "
        "Room.objects.create(slug='pair', title='Pair', kind='relay')",
    )

    async def scenario():
        token_a, _ = page_token(first)
        token_b, _ = page_token(second)
        path = "/ws/media/pair/?token={}"
        async with websockets.connect(first.ws_url + path.format(token_a), origin=first.url) as ada:
            welcome = json.loads(await asyncio.wait_for(ada.recv(), 30))
            assert welcome["type"] == "welcome"
            ada_id = welcome["you"]["peer"]

            async with websockets.connect(
                second.ws_url + path.format(token_b), origin=second.url
            ) as bob:
                error = json.loads(await asyncio.wait_for(bob.recv(), 30))
                assert error["type"] == "error" and error["code"] == "media-elsewhere", error
                assert "another server process" in error["message"]
                await asyncio.wait_for(bob.wait_closed(), 30)
                assert bob.close_code == 4012
            # ada never saw bob stay: a join then a leave at most, and she is still in
            await recv_until(ada, lambda m: m.get("type") == "peer-left", 30)

            # the same partner on the right process is welcome
            async with websockets.connect(
                first.ws_url + path.format(token_b), origin=first.url
            ) as bob_again:
                welcome = json.loads(await asyncio.wait_for(bob_again.recv(), 30))
                assert welcome["type"] == "welcome"
                assert [p["peer"] for p in welcome["peers"]] == [ada_id]

    asyncio.run(scenario())


def test_deployed_layout_echo_on_a_sched_idle_media_process(redis_env, daphne_factory):
    """docs/deploy.md's layout: a web process and a media process (SCHED_IDLE) sharing
    Redis. An echo participant on the media process's ``/ws/media/`` gets its frames back,
    and the lobby on the web process sees them join and leave."""
    web = daphne_factory(redis_env)
    # The page is on the web process's origin; without nginx (one origin for both, as in
    # docs/deploy.md) the media process must trust it explicitly.
    media = daphne_factory(
        redis_env | {"CSRF_TRUSTED_ORIGINS": web.url}, same_db_as=web, sched_idle=True
    )
    assert os.sched_getscheduler(media.pid) == os.SCHED_IDLE
    assert os.sched_getscheduler(web.pid) == os.SCHED_OTHER
    web.manage(
        "shell",
        "-c",
        "from rooms.models import Room; "
        "Room.objects.create(slug='mirror', title='Mirror', kind='echo', capacity=1)",
    )

    async def scenario():
        lobby_token, _ = page_token(web)
        async with websockets.connect(
            f"{web.ws_url}/ws/lobby/?token={lobby_token}", origin=web.url
        ) as lobby:
            await recv_until(lobby, lambda m: m["type"] == "lobby-state", 30)
            token, _ = page_token(web)
            async with websockets.connect(
                f"{media.ws_url}/ws/media/mirror/?token={token}", origin=web.url
            ) as ws:
                welcome = await recv_until(ws, lambda m: m["type"] == "welcome", 30)

                async def send(message):
                    await ws.send(json.dumps(message))

                async def receive():
                    return json.loads(await ws.recv())

                client = ServerRoomClient(send, ServerRoomClient.default_tracks(PICTURE))
                client.pump(receive)
                try:
                    await client.offer()
                    got = await client.wait_frames("video", 20, 60)
                    assert got.last.width == PICTURE.shape[1]
                    assert not client.errors
                    joined = await recv_until(
                        lobby,
                        lambda m: m["type"] == "presence" and m["event"] == "join",
                        30,
                    )
                    assert joined["peer"]["peer"] == welcome["you"]["peer"]
                finally:
                    await client.close()
            left = await recv_until(
                lobby, lambda m: m["type"] == "presence" and m["event"] == "leave", 30
            )
            assert left["peer"]["peer"] == welcome["you"]["peer"]

    asyncio.run(scenario())
