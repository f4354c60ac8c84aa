"""Quotas against real Daphne processes: creation rates and identity minting shared by two
processes through one real Redis; live-stream caps, maximum duration and disk budget with
the real FFmpeg through the HTTP (and WebSocket) ingest.

Visitors are cookie jars (identities) with their own source addresses (127.0.0.x), so a
test sees one identity or address refused while another is not.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time

import pytest
import websockets

from tests.support.ingest import (
    clip_chunks,
    media_dir,
    page_token,
    stream_status,
    wait_status,
    ws_recv,
)
from tests.support.visitor import Reply, Visitor

pytestmark = pytest.mark.timeout(240)

STREAM_ENV = {"STREAM_IDLE_TIMEOUT": "30", "STREAM_RATE_LIMIT": "40"}


def assert_refused_page(reply: Reply, status: int, text: str) -> None:
    """The form's page again: the status, ``Retry-After``, the message shown."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert int(reply.headers["Retry-After"]) >= 1
    assert 'class="message error"' in reply.body
    assert text in reply.body, reply.body


def two_processes(daphne_factory, redis_env, **env: str):
    """Two Daphne processes of one site: one SQLite file, one Redis (cache included)."""
    first = daphne_factory({**redis_env, **env})
    second = daphne_factory({**redis_env, **env}, same_db_as=first)
    return first, second


# --- creation rates across processes -----------------------------------------------------
def test_room_creation_rate_per_identity_and_address_across_processes(daphne_factory, redis_env):
    first, second = two_processes(
        daphne_factory,
        redis_env,
        ROOM_CREATE_RATE="2/h",
        ROOM_CREATE_RATE_PER_ADDRESS="4/h",
    )
    alice = Visitor()
    assert alice.create_room(first, "Alice one").url.endswith("/rooms/alice-one/")
    assert alice.create_room(second, "Alice two").url.endswith("/rooms/alice-two/")
    refused = alice.create_room(first, "Alice three")
    assert_refused_page(refused, 429, "Too many new rooms from you: at most 2 per hour.")
    assert alice.request(first.url + "/rooms/alice-three/").status == 404
    # joining a room that exists is not creating one
    assert alice.create_room(second, "Alice one").url.endswith("/rooms/alice-one/")
    # another identity is unaffected (the address has counted 3 attempts, a 4th is fine)
    assert Visitor().create_room(second, "Bob one").url.endswith("/rooms/bob-one/")
    # a third identity from the same address is over the address's rate, on either process
    assert_refused_page(
        Visitor().create_room(first, "Carol one"),
        429,
        "Too many new rooms from your network address: at most 4 per hour.",
    )
    # another address is unaffected
    assert Visitor("127.0.0.2").create_room(first, "Dave one").url.endswith("/rooms/dave-one/")


def test_stream_creation_rate_is_shared_by_processes(daphne_factory, redis_env):
    first, second = two_processes(daphne_factory, redis_env, STREAM_CREATE_RATE="1/h")
    erin = Visitor()
    erin.new_stream(first, "Erin live")
    refused = erin.create_stream(second, "Erin again")
    assert_refused_page(refused, 429, "Too many new streams from you: at most 1 per hour.")
    assert 'value="Erin again"' in refused.body  # the form keeps what was typed
    faces = erin.post_form(first, "/faces/stream/", {"title": "Erin faces"}, page="/faces/")
    assert_refused_page(faces, 429, "Too many new streams from you")
    Visitor().new_stream(second, "Frank live")


def test_minting_identities_is_limited_per_address_across_processes(daphne_factory, redis_env):
    # Each server's start-up probe (GET /me/token/ without cookies) mints one identity.
    first, second = two_processes(daphne_factory, redis_env, IDENTITY_MINT_RATE_PER_ADDRESS="6/h")
    known = Visitor()
    assert known.request(first.url + "/").status == 200  # the 3rd identity of 127.0.0.1
    allowed = 0
    for i in range(8):
        reply = Visitor().request((first, second)[i % 2].url + "/")
        if reply.status != 200:
            break
        allowed += 1
    assert allowed == 3  # 6 in all: the count is shared by the two processes
    assert reply.status == 429 and int(reply.headers["Retry-After"]) >= 1
    assert "Too many new visitors from your network address: at most 6 per hour." in reply.body
    # non-page clients get the JSON error
    token = Visitor().request(second.url + "/me/token/", headers={"Accept": "application/json"})
    assert token.status == 429 and token.json()["error"] == "rate-limited", token
    assert token.json()["quota"] == "identity-mint" and "Retry-After" in token.headers
    # visitors who already have an identity, and other addresses, are unaffected
    assert known.request(second.url + "/").status == 200
    assert Visitor("127.0.0.2").request(first.url + "/").status == 200


# --- live streams ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chunks(request, tmp_path_factory):
    return clip_chunks(request, tmp_path_factory, seconds=8)


async def ws_first_chunk(server, slug: str, key: str, data: bytes) -> dict:
    url = f"{server.ws_url}/ws/streams/{slug}/ingest/?token={page_token(server)}&v=1"
    async with websockets.connect(url, origin=server.url, max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "publish", "key": key}))
        assert (await ws_recv(ws))["type"] == "ready"
        await ws.send(struct.pack(">I", 0) + data)
        return await ws_recv(ws)


def test_live_stream_caps_per_identity_address_and_process(daphne_factory, chunks):
    server = daphne_factory(
        {
            **STREAM_ENV,
            "STREAM_MAX_LIVE_PER_IDENTITY": "1",
            "STREAM_MAX_LIVE_PER_ADDRESS": "2",
            "STREAM_MAX_LIVE_PER_PROCESS": "3",
        }
    )
    first = chunks[0].data
    alice = Visitor()
    a1, a1_key = alice.new_stream(server, "Alice one")
    a2, a2_key = alice.new_stream(server, "Alice two")
    assert alice.post_chunk(server, a1, a1_key, 0, first).status == 202
    wait_status(server, a1, "live")

    # the identity's second live stream: 429 over HTTP and over the WebSocket ingest
    refused = alice.post_chunk(server, a2, a2_key, 0, first)
    assert refused.status == 429 and refused.headers["Retry-After"] == "60", refused
    body = refused.json()
    assert body["error"] == "rate-limited" and body["quota"] == "live-per-identity"
    assert "You already have 1 live stream" in body["message"]
    reply = asyncio.run(ws_first_chunk(server, a2, a2_key, first))
    assert reply["type"] == "error" and reply["code"] == "rate-limited", reply
    assert reply["quota"] == "live-per-identity" and reply["retry_after"] == 60
    assert stream_status(server, a2)["status"] == "idle"
    assert not media_dir(server, a2).exists()  # no FFmpeg was started for it
    # ... and at creation: the form says why
    assert_refused_page(alice.create_stream(server, "Alice three"), 429, "You already have 1")

    # the address's cap: a second identity on 127.0.0.1 may, a third may not
    bob = Visitor()
    b1, b1_key = bob.new_stream(server, "Bob one")
    assert bob.post_chunk(server, b1, b1_key, 0, first).status == 202
    wait_status(server, b1, "live")
    assert_refused_page(
        Visitor().create_stream(server, "Carol one"),
        429,
        "Your network address already has 2 live streams",
    )

    # the process's cap: another address may start the third, not a fourth (503)
    carol = Visitor("127.0.0.2")
    c1, c1_key = carol.new_stream(server, "Carol one")
    assert carol.post_chunk(server, c1, c1_key, 0, first).status == 202
    dave = Visitor("127.0.0.3")
    d1, d1_key = dave.new_stream(server, "Dave one")
    busy = dave.post_chunk(server, d1, d1_key, 0, first)
    assert busy.status == 503 and busy.headers["Retry-After"] == "60", busy
    assert busy.json()["error"] == "busy" and busy.json()["quota"] == "live-per-process"
    assert "as many live streams as it can (3)" in busy.json()["message"]

    # a stream that ends frees its places: alice's second stream may go live now
    stop = alice.request(
        f"{server.url}/streams/{a1}/stop/",
        data=b"",
        headers={"Authorization": f"Bearer {a1_key}", "Accept": "application/json"},
    )
    assert stop.json()["state"] == "ended", stop
    assert alice.post_chunk(server, a2, a2_key, 0, first).status == 202


def test_site_wide_live_cap_counts_every_process(daphne_factory, redis_env, chunks):
    first, second = two_processes(daphne_factory, redis_env, **STREAM_ENV, STREAM_MAX_LIVE="1")
    alice, bob = Visitor(), Visitor("127.0.0.2")
    a1, a1_key = alice.new_stream(first, "Alice one")
    b1, b1_key = bob.new_stream(second, "Bob one")
    assert alice.post_chunk(first, a1, a1_key, 0, chunks[0].data).status == 202
    wait_status(first, a1, "live")
    busy = bob.post_chunk(second, b1, b1_key, 0, chunks[0].data)
    assert busy.status == 503 and busy.json()["quota"] == "live-site", busy
    assert "The site is running as many live streams as it can (1)" in busy.json()["message"]
    assert_refused_page(bob.create_stream(second, "Bob two"), 503, "The site is running")


def publish_until_refused(visitor, server, slug, key, chunks) -> Reply:
    """Publish in real time until a chunk is refused; that refusal."""
    start = time.monotonic()
    for seq, chunk in enumerate(chunks):
        time.sleep(max(0.0, start + chunk.end_ms / 1000 - time.monotonic()))
        reply = visitor.post_chunk(server, slug, key, seq, chunk.data)
        if reply.status != 202:
            return reply
    raise AssertionError("every chunk was accepted")


def check_ended_cleanly(server, slug: str, reason: str) -> None:
    status = wait_status(server, slug, "ended")
    assert status["reason"] == reason, status
    text = (media_dir(server, slug) / "media_0.m3u8").read_text()
    assert text.rstrip().endswith("#EXT-X-ENDLIST")  # FFmpeg finalised: a complete VOD


def test_a_stream_ends_at_its_maximum_duration(daphne_factory, chunks):
    server = daphne_factory({**STREAM_ENV, "STREAM_MAX_DURATION": "1"})
    alice = Visitor()
    slug, key = alice.new_stream(server, "Short show")
    refused = publish_until_refused(alice, server, slug, key, chunks)
    reason = "ended: reached the maximum live duration (1 s)"
    assert refused.status == 409 and refused.json()["error"] == "closed", refused
    assert reason in refused.json()["message"]
    check_ended_cleanly(server, slug, reason)


def test_a_stream_ends_at_its_disk_budget(daphne_factory, chunks):
    server = daphne_factory(
        {**STREAM_ENV, "STREAM_MAX_DISK_MB": "0.2", "STREAM_DISK_CHECK_INTERVAL": "0"}
    )
    alice = Visitor()
    slug, key = alice.new_stream(server, "Big show")
    refused = publish_until_refused(alice, server, slug, key, chunks)
    reason = "ended: its recording reached the disk budget (0.2 MB)"
    assert refused.status == 409 and refused.json()["error"] == "closed", refused
    assert reason in refused.json()["message"]
    check_ended_cleanly(server, slug, reason)
