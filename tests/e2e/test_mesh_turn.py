"""Mesh media through a real coturn, relay only, with TURN REST credentials.

The site holds only the shared secret (``ICE_SERVERS`` entry with ``secret``) and hands
each browser short-lived credentials in ``welcome``; ``ICE_TRANSPORT_POLICY=relay``
makes Chromium use nothing but the TURN relay, so media flowing proves the relay works.
"""

import json

import pytest
from playwright.sync_api import expect

from tests.e2e.test_mesh import (
    WAIT_MS,
    create_room,
    expect_connected_to,
    expect_remote_videos_playing,
    new_participant,
    open_room,
)
from tests.support.turn import TurnMissing, TurnServer


@pytest.fixture
def turn_server():
    try:
        server = TurnServer().start()
    except TurnMissing as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


def relay_site(daphne_factory, turn: TurnServer, secret: str | None = None):
    entry = {**turn.ice_server, "secret": secret or turn.secret}
    return daphne_factory({"ICE_SERVERS": json.dumps([entry]), "ICE_TRANSPORT_POLICY": "relay"})


def test_media_flows_through_turn_relay(chromium_browser, daphne_factory, turn_server):
    site = relay_site(daphne_factory, turn_server)
    ada = new_participant(chromium_browser, site.url, "Ada")
    bob = new_participant(chromium_browser, site.url, "Bob")
    try:
        path = create_room(ada, "Turn Room")
        open_room(bob, site.url, path)
        # the secret never reaches the browser: only derived, expiring credentials
        for person in (ada, bob):
            assert turn_server.secret not in person.page.content()
        expect_connected_to(ada, [bob])
        expect_connected_to(bob, [ada])
        expect_remote_videos_playing(ada, 1)
        expect_remote_videos_playing(bob, 1)
        for person in (ada, bob):
            person.page.wait_for_function(
                "() => window.rtcMesh.peers().length === 1"
                " && window.rtcMesh.peers()[0].stats?.candidateType === 'relay'",
                timeout=WAIT_MS,
            )
        welcome_servers = ada.page.evaluate("window.rtcMesh.controller.iceServers")
        assert welcome_servers[0]["username"].endswith(
            ":" + ada.page.evaluate("document.querySelector('meta[name=rtc-identity]').content")
        )
    finally:
        for person in (ada, bob):
            person.context.close()


def test_wrong_turn_secret_is_reported_on_the_page(chromium_browser, daphne_factory, turn_server):
    site = relay_site(daphne_factory, turn_server, secret="not-the-secret")
    ada = new_participant(chromium_browser, site.url, "Ada")
    bob = new_participant(chromium_browser, site.url, "Bob")
    try:
        path = create_room(ada, "Bad Turn")
        open_room(bob, site.url, path)
        problem = ada.page.get_by_test_id("tile-problem")
        expect(problem).to_be_visible(timeout=WAIT_MS)
        expect(problem).to_contain_text("no connection", timeout=WAIT_MS)
        expect(problem).to_contain_text("401")  # the TURN server refused the credentials
        expect(ada.page.get_by_test_id("remote-tile")).not_to_have_attribute(
            "data-state", "connected"
        )
    finally:
        for person in (ada, bob):
            person.context.close()
