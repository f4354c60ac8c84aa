"""The quotas and fan-out changes add no work to the signaling hot path (no benchmark: the
work is counted). Relaying offers between two mesh peers touches neither the presence
backend, nor the lobby or audience batchers, nor the detection budgets; the per-socket rate
limiter is still one slotted ``TokenBucket`` whose ``take`` is all a message costs."""

from __future__ import annotations

import inspect

import pytest
from channels.db import database_sync_to_async

from faces import services as faces_services
from identity.services import Identity
from presence import services as presence
from presence.backends import get_backend
from rooms.models import Room
from rtcsite.ratelimit import TokenBucket
from tests.support.ws import communicator

pytestmark = [pytest.mark.django_db(transaction=True)]

PEOPLE = [Identity(id=f"{i:016x}", name=f"user{i}") for i in range(1, 3)]
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
RELAYED = 100


def counting(calls: dict[str, int], name: str, function):
    """``function``, counting its calls in ``calls[name]`` (behaviour unchanged)."""

    def wrapper(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return function(*args, **kwargs)

    return wrapper


async def test_relaying_signals_does_no_quota_or_presence_work(monkeypatch, settings):
    settings.SIGNALING_LOCAL_DELIVERY = False  # through the channel layer, like two processes
    await database_sync_to_async(Room.objects.create)(slug="hot", title="Hot", kind="mesh")
    a = communicator("/ws/rooms/hot/", identity=PEOPLE[0])
    b = communicator("/ws/rooms/hot/", identity=PEOPLE[1])
    assert (await a.connect())[0] and (await b.connect())[0]
    assert (await a.receive_json_from())["type"] == "welcome"
    peer_b = (await b.receive_json_from())["you"]["peer"]
    assert (await a.receive_json_from())["type"] == "peer-joined"

    calls: dict[str, int] = {}
    backend = get_backend()
    for name, _ in inspect.getmembers(type(backend), inspect.iscoroutinefunction):
        if not name.startswith("_"):
            method = getattr(backend, name)
            monkeypatch.setattr(backend, name, counting(calls, f"backend.{name}", method))
    for name in ("_announce", "_audience_counts", "_lobby_batcher"):
        monkeypatch.setattr(presence, name, counting(calls, name, getattr(presence, name)))
    monkeypatch.setattr(
        faces_services, "identity_budget", counting(calls, "budget", faces_services.identity_budget)
    )
    for name in ("take", "ready", "spend", "full"):
        monkeypatch.setattr(
            TokenBucket, name, counting(calls, f"bucket.{name}", getattr(TokenBucket, name))
        )

    for _ in range(RELAYED):
        await a.send_json_to({"type": "offer", "to": peer_b, "sdp": SDP})
        assert (await b.receive_json_from(timeout=5))["type"] == "offer"

    assert calls == {"bucket.take": RELAYED}, calls  # one token per message, nothing else
    assert not hasattr(TokenBucket(1.0, 1), "__dict__")  # still a few bytes per socket
    # the counting sees presence work where there is some: a ping is a heartbeat
    await a.send_json_to({"type": "ping"})
    assert (await a.receive_json_from(timeout=5))["type"] == "pong"
    assert calls["backend.refresh"] == 1, calls
    await a.disconnect()
    await b.disconnect()
