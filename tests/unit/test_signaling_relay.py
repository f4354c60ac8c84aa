"""Mesh signaling through the room socket, against the in-memory layer AND a real Redis.

Every test runs four times: with the embedded defaults (InMemoryChannelLayer, memory
presence, same-process delivery), with the in-memory layer carrying the relay, and with each
channels-redis layer + the Redis presence backend on a real server. The Redis runs turn
same-process delivery off (``SIGNALING_LOCAL_DELIVERY``): every consumer of a test lives in
this process, and those runs are there to prove delivery *through Redis*, as between two
Daphne processes.
"""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers

from identity.services import Identity
from rooms.models import Room, RoomKind
from rtcsite.ws.codes import CloseCode
from signaling import local
from tests.support.ws import communicator

pytestmark = [pytest.mark.django_db(transaction=True)]

PEOPLE = [Identity(id=f"{i:016x}", name=f"user{i}") for i in range(1, 6)]
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


LAYER_CLASSES = {
    "redis-core": "channels_redis.core.RedisChannelLayer",
    "redis-pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}


@pytest.fixture(params=["memory", "memory-layer", "redis-core", "redis-pubsub"])
def layer(request, settings):
    """Switch channel layer, presence backend and same-process delivery for one test."""
    from presence.backends import reset_backend

    settings.SIGNALING_LOCAL_DELIVERY = request.param == "memory"
    if request.param in LAYER_CLASSES:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        settings.REDIS_URL = url
        settings.PRESENCE_KEY_PREFIX = f"{prefix}:presence"
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": LAYER_CLASSES[request.param],
                "CONFIG": {
                    "hosts": [{"address": url, "socket_timeout": 30}],
                    "prefix": f"{prefix}:layer",
                },
            }
        }
    else:
        settings.REDIS_URL = ""
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "rtcsite.layers.EmbeddedChannelLayer"}}
    channel_layers.backends.clear()
    reset_backend()
    yield request.param
    channel_layers.backends.clear()


@database_sync_to_async
def make_room(slug="mesh1", kind=RoomKind.MESH) -> Room:
    return Room.objects.create(slug=slug, title=slug, kind=kind)


async def join(who, slug="mesh1"):
    comm = communicator(f"/ws/rooms/{slug}/", identity=who)
    connected, _ = await comm.connect()
    assert connected
    welcome = await comm.receive_json_from(timeout=5)
    assert welcome["type"] == "welcome", welcome
    return comm, welcome["you"]["peer"]


async def full_room(n=3):
    """n peers joined; all peer-joined events drained."""
    await make_room()
    joined = []
    for who in PEOPLE[:n]:
        comm, peer = await join(who)
        for earlier, _ in joined:
            assert (await earlier.receive_json_from(timeout=5))["type"] == "peer-joined"
        joined.append((comm, peer))
    return joined


async def close_all(joined):
    for comm, _ in joined:
        await comm.disconnect()


async def test_addressed_delivery_only_to_target_with_stamped_from(layer):
    (a, pa), (b, pb), (c, pc) = await full_room()
    await a.send_json_to({"type": "offer", "to": pb, "sdp": SDP, "from": pc, "x": "junk"})
    got = await b.receive_json_from(timeout=5)
    assert got == {"type": "offer", "sdp": SDP, "from": pa}  # forged from replaced, junk gone
    assert await c.receive_nothing(timeout=0.3)
    assert await a.receive_nothing(timeout=0.1)

    await b.send_json_to({"type": "answer", "to": pa, "sdp": SDP})
    assert await a.receive_json_from(timeout=5) == {"type": "answer", "sdp": SDP, "from": pb}
    candidate = {
        "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "abcd",
    }
    await c.send_json_to({"type": "candidate", "to": pa, "candidate": candidate})
    assert await a.receive_json_from(timeout=5) == {
        "type": "candidate",
        "candidate": candidate,
        "from": pc,
    }
    await c.send_json_to({"type": "candidate", "to": pb, "candidate": None})
    assert await b.receive_json_from(timeout=5) == {
        "type": "candidate",
        "candidate": None,
        "from": pc,
    }
    assert await a.receive_nothing(timeout=0.2)
    assert local.registered() == 3
    await close_all([(a, pa), (b, pb), (c, pc)])
    assert local.registered() == 0  # nothing kept for sockets that have gone


async def test_capacity_race_admits_exactly_three(layer):
    await make_room()

    async def attempt(who):
        comm = communicator("/ws/rooms/mesh1/", identity=who)
        await comm.connect()
        first = await comm.receive_json_from(timeout=5)
        return comm, first

    results = await asyncio.gather(*(attempt(who) for who in PEOPLE[:4]))
    kinds = sorted(first["type"] for _, first in results)
    assert kinds == ["error", "welcome", "welcome", "welcome"]
    refused = next(comm for comm, first in results if first["type"] == "error")
    assert (await refused.receive_output(timeout=5))["code"] == CloseCode.ROOM_FULL
    # disconnect every communicator, refused ones too: a consumer left waiting on a Redis
    # read must not be cancelled at loop shutdown (redis-py can swallow that cancel)
    for comm, _ in results:
        await comm.disconnect()


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "bad-message"),
        (json.dumps({"type": "offer", "sdp": SDP}), "bad-message"),  # no 'to'
        (json.dumps({"type": "offer", "to": "0" * 12, "sdp": SDP}), "unknown-peer"),
        (json.dumps({"type": "offer", "to": "PEER", "sdp": SDP}), "bad-message"),
        # a valid id plus a newline ('$' matches before a final newline; fullmatch does not)
        (json.dumps({"type": "offer", "to": "{b}\n", "sdp": SDP}), "bad-message"),
        # a lone surrogate (JSON \ud800): not UTF-8, so not sendable through Redis
        (json.dumps({"type": "offer", "to": "{b}", "sdp": SDP + "a=x:\ud800"}), "bad-message"),
        (
            json.dumps(
                {
                    "type": "candidate",
                    "to": "{b}",
                    "candidate": {"candidate": "", "sdpMid": "\udc00"},
                }
            ),
            "bad-message",
        ),
        (json.dumps({"type": "offer", "to": "{b}", "sdp": "hello"}), "bad-message"),
        (json.dumps({"type": "offer", "to": "{b}", "sdp": 5}), "bad-message"),
        (json.dumps({"type": "offer", "to": "{b}", "sdp": "v=0" + "x" * 50_000}), "too-large"),
        (json.dumps({"type": "candidate", "to": "{b}"}), "bad-message"),
        (json.dumps({"type": "candidate", "to": "{b}", "candidate": "x"}), "bad-message"),
        (
            json.dumps(
                {
                    "type": "candidate",
                    "to": "{b}",
                    "candidate": {"candidate": "rm -rf", "sdpMid": "0"},
                }
            ),
            "bad-message",
        ),
        (
            json.dumps(
                {
                    "type": "candidate",
                    "to": "{b}",
                    "candidate": {"candidate": "", "sdpMLineIndex": True},
                }
            ),
            "bad-message",
        ),
        (json.dumps({"type": "dance", "to": "{b}"}), "unknown-type"),
        (json.dumps({"type": "offer", "to": "{b}", "sdp": "v=0" + "x" * 70_000}), "too-large"),
    ],
)
async def test_bad_messages_get_errors_are_not_relayed_and_socket_stays(layer, message, code):
    (a, pa), (b, pb) = await full_room(2)
    await a.send_to(text_data=message.replace("{b}", pb))
    error = await a.receive_json_from(timeout=5)
    assert error["type"] == "error"
    assert error["code"] == code
    assert await b.receive_nothing(timeout=0.2)  # never relayed
    await a.send_json_to({"type": "offer", "to": pb, "sdp": SDP})  # still works
    assert (await b.receive_json_from(timeout=5))["from"] == pa
    await close_all([(a, pa), (b, pb)])


async def test_cannot_signal_a_peer_in_another_room(layer):
    await make_room("other")
    (a, pa), (b, pb) = await full_room(2)
    stranger, ps = await join(PEOPLE[4], "other")
    await stranger.send_json_to({"type": "offer", "to": pa, "sdp": SDP})
    assert (await stranger.receive_json_from(timeout=5))["code"] == "unknown-peer"
    assert await a.receive_nothing(timeout=0.2)
    await close_all([(a, pa), (b, pb), (stranger, ps)])


async def test_peer_that_left_is_unknown(layer):
    (a, _pa), (b, pb) = await full_room(2)
    await b.send_json_to({"type": "leave"})
    assert (await b.receive_output(timeout=5))["type"] == "websocket.close"
    await b.disconnect()
    left = await a.receive_json_from(timeout=5)
    assert left == {"type": "peer-left", "peer": pb}
    await a.send_json_to({"type": "offer", "to": pb, "sdp": SDP})
    assert (await a.receive_json_from(timeout=5))["code"] == "unknown-peer"
    await a.disconnect()


async def test_bad_token_and_foreign_origin_refused(layer):
    await make_room()
    comm = communicator("/ws/rooms/mesh1/", token="forged")
    await comm.connect()
    assert (await comm.receive_json_from())["code"] == "token-invalid"
    assert (await comm.receive_output())["code"] == CloseCode.TOKEN_INVALID
    await comm.disconnect()
    comm = communicator("/ws/rooms/mesh1/", identity=PEOPLE[0], origin=b"http://evil.example")
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()
