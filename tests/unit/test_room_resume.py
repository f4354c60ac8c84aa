"""``?resume=<old peer>``: a reconnecting client releases its own ghost, nobody else's."""

import pytest
from channels.db import database_sync_to_async

from identity.services import Identity
from identity.tokens import issue_token
from presence import services as presence
from rooms.models import Room, RoomKind
from tests.support.ws import communicator

pytestmark = [pytest.mark.django_db(transaction=True)]
ANA = Identity(id="a1" * 8, name="ana")
BEN = Identity(id="b2" * 8, name="ben")


@database_sync_to_async
def make_pair_room():
    return Room.objects.create(slug="pair", title="Pair", kind=RoomKind.RELAY)


async def ghost(who: Identity, peer: str) -> None:
    """A place held by a connection that is gone without leaving (a dropped socket)."""
    await presence.join("pair", peer, channel="gone!x", user_id=who.id, name=who.name, capacity=2)


async def connect(who: Identity, resume: str | None = None):
    token = issue_token(who) + (f"&resume={resume}" if resume else "")
    comm = communicator("/ws/media/pair/", token=token)
    await comm.connect()
    return comm, await comm.receive_json_from(timeout=5)


async def test_resume_releases_own_ghost_in_a_full_room():
    await make_pair_room()
    await ghost(ANA, "aaaaaaaaaaaa")
    await ghost(BEN, "bbbbbbbbbbbb")
    comm, refused = await connect(ANA)
    assert refused["code"] == "room-full"  # without resume, the ghost holds the place
    comm, welcome = await connect(ANA, resume="aaaaaaaaaaaa")
    assert welcome["type"] == "welcome"
    assert [p["peer"] for p in welcome["peers"]] == ["bbbbbbbbbbbb"]
    await comm.disconnect()


async def test_cannot_resume_someone_elses_place():
    await make_pair_room()
    await ghost(ANA, "aaaaaaaaaaaa")
    await ghost(BEN, "bbbbbbbbbbbb")
    _comm, refused = await connect(ANA, resume="bbbbbbbbbbbb")
    assert refused["code"] == "room-full"
    assert {p.peer_id for p in await presence.members("pair")} == {
        "aaaaaaaaaaaa",
        "bbbbbbbbbbbb",
    }


async def test_consumer_crash_releases_the_place(monkeypatch):
    from signaling.consumers import RoomConsumer

    async def boom(self, content):
        raise RuntimeError("handler bug")

    monkeypatch.setattr(RoomConsumer, "handle_media", boom)
    await make_pair_room()
    comm, welcome = await connect(ANA)
    assert welcome["type"] == "welcome"
    await comm.send_json_to({"type": "media", "audio": True})
    with pytest.raises(RuntimeError):
        await comm.receive_output(timeout=5)
    assert await presence.members("pair") == []
