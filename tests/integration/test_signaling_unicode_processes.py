"""A lone surrogate in a relayed string, between two real Daphne processes sharing Redis.

JSON's ``\\ud800`` escape gives Python a string that cannot be encoded as UTF-8. Within
one process such an SDP was relayed as is; across processes the channel layer's msgpack
raised ``UnicodeEncodeError`` in the sender's handler and closed its socket with 1011.
"""

import asyncio
import json

import websockets

from tests.integration.test_presence_processes import recv_until, start_two
from tests.integration.test_ws_auth_daphne import page_token

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host"


def test_lone_surrogate_refused_sender_stays_and_receiver_unharmed(redis_env, daphne_factory):
    # a long presence ttl: these sockets send no heartbeats
    first, second, _ = start_two(redis_env, daphne_factory, ttl=60)
    bad = [  # json.dumps writes a lone surrogate as its \u escape, as a hostile client would
        {"type": "offer", "sdp": SDP + "a=x:\ud800\r\n"},
        {"type": "answer", "sdp": SDP + "s=\udfff\r\n"},
        {"type": "candidate", "candidate": {"candidate": CANDIDATE, "sdpMid": "\udc00"}},
        {"type": "candidate", "candidate": {"candidate": CANDIDATE, "usernameFragment": "\ud83d"}},
    ]

    async def scenario():
        token_a, _ = page_token(first)
        token_b, _ = page_token(second)
        async with (
            websockets.connect(
                f"{first.ws_url}/ws/rooms/crash/?token={token_a}", origin=first.url
            ) as ada,
        ):
            ada_id = (await recv_until(ada, lambda m: m["type"] == "welcome", 30))["you"]["peer"]
            async with websockets.connect(
                f"{second.ws_url}/ws/rooms/crash/?token={token_b}", origin=second.url
            ) as bob:
                await recv_until(bob, lambda m: m["type"] == "welcome", 30)
                bob_id = (await recv_until(ada, lambda m: m["type"] == "peer-joined", 30))["peer"]
                errors = []
                for message in bad:
                    await ada.send(json.dumps({**message, "to": bob_id}))
                    errors.append(json.loads(await asyncio.wait_for(ada.recv(), 30)))
                await ada.send(json.dumps({"type": "ping", "t": 1}))
                pong = json.loads(await asyncio.wait_for(ada.recv(), 30))
                # an escaped surrogate *pair* is one valid character: relayed as sent
                good = SDP + "s=\U0001f600\r\n"
                await ada.send(json.dumps({"type": "offer", "to": bob_id, "sdp": good}))
                first_at_bob = json.loads(await asyncio.wait_for(bob.recv(), 30))
                await bob.send(json.dumps({"type": "ping", "t": 2}))
                bob_pong = json.loads(await asyncio.wait_for(bob.recv(), 30))
        return errors, pong, first_at_bob, bob_pong, good, ada_id

    errors, pong, first_at_bob, bob_pong, good, ada_id = asyncio.run(scenario())
    for message, error in zip(bad, errors, strict=True):
        assert error["type"] == "error" and error["code"] == "bad-message", (message, error)
        assert "surrogate" in error["message"]
    assert pong == {"type": "pong", "t": 1}  # the sender is still connected
    # nothing of the refused messages reached the receiver; the next offer did, intact
    assert first_at_bob == {"type": "offer", "sdp": good, "from": ada_id}
    assert bob_pong == {"type": "pong", "t": 2}
