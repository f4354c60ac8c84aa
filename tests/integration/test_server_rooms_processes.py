"""Room affinity across two real Daphne processes sharing one Redis: a relay room's two
server peers must be in one process, so a partner arriving on the other is refused."""

import asyncio
import json

import websockets

from tests.integration import test_presence_processes
from tests.integration.test_presence_processes import recv_until
from tests.integration.test_ws_auth_daphne import page_token

two_servers = test_presence_processes.two_servers  # fixture: two Daphnes, one SQLite + Redis


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
        path = "/ws/rooms/pair/?token={}"
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
