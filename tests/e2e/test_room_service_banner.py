"""A room page in Chromium while the room service's Redis restarts: the banner says so and
goes, the socket stays up (a private ``redis-server``; the shared one is never restarted)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.redis_server import RedisServer

WAIT_MS = 30_000


@pytest.fixture
def private_redis():
    server = RedisServer().start()
    yield server
    server.stop()


def test_room_page_shows_reconnecting_to_the_room_service(page, private_redis, daphne_factory):
    server = daphne_factory({"REDIS_URL": private_redis.url})
    server.create_rooms(("blip", "mesh"))
    page.goto(f"{server.url}/rooms/blip/")
    room = page.locator("[data-room]")
    expect(room).to_have_attribute("data-joined", "true", timeout=WAIT_MS)
    peer = room.get_attribute("data-peer")

    private_redis.stop()
    expect(room).to_have_attribute("data-service", "reconnecting", timeout=WAIT_MS)
    banner = page.get_by_test_id("room-banner")
    expect(banner).to_have_text("Reconnecting to the room service…")
    expect(page.locator("#ws-status")).to_have_text("Reconnecting to the room service…")

    private_redis.start()
    expect(room).to_have_attribute("data-service", "ok", timeout=WAIT_MS)
    expect(banner).to_be_hidden()
    expect(page.locator("#ws-status")).to_have_text("live")
    # the same socket and place throughout: no reconnect, no new peer id
    expect(room).to_have_attribute("data-joined", "true")
    assert room.get_attribute("data-peer") == peer
    expect(page.locator("#participants li")).to_have_count(1)
