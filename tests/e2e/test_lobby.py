"""The lobby in real Chromium: tabs, live socket, create/join rooms of each kind, rename."""

import re

import pytest
from playwright.sync_api import expect

from rooms.modes import MODES, MODES_BY_KEY

KINDS = [("mesh", "Mesh rooms"), ("echo", "Server echo"), ("relay", "Server relay")]


def open_lobby(page, server, hash_=""):
    page.goto(f"{server.url}/{hash_}")
    # the lobby's own WebSocket, authenticated with the token embedded in the page
    expect(page.locator("body")).to_have_attribute("data-lobby", "connected")
    expect(page.locator("#ws-status")).to_have_text("live")


@pytest.mark.parametrize(("kind", "label"), KINDS)
def test_create_room_of_each_kind_by_name(page, live_server_proc, kind, label):
    open_lobby(page, live_server_proc)
    page.get_by_role("tab", name=label).click()
    panel = page.locator(f'[data-panel="{kind}"]')
    expect(panel).to_be_visible()
    name = f"E2E {kind.title()} Room"
    page.get_by_test_id(f"room-name-{kind}").fill(name)
    page.get_by_test_id(f"join-{kind}").click()

    slug = f"e2e-{kind}-room"
    expect(page).to_have_url(re.compile(rf"/rooms/{slug}/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    if not MODES_BY_KEY[kind].available:
        # the media part is not built yet, and the page says so instead of faking it
        expect(page.get_by_test_id("room-unavailable")).to_contain_text("not available yet")
        assert page.locator("video").count() == 0
    else:
        expect(page.get_by_test_id("room-unavailable")).to_have_count(0)

    open_lobby(page, live_server_proc, f"#{kind}")
    card = page.locator(f'[data-panel="{kind}"] [data-room="{slug}"]')
    expect(card).to_be_visible()
    card.get_by_role("link", name=name).click()
    expect(page).to_have_url(re.compile(rf"/rooms/{slug}/$"))


def test_other_tabs_say_not_available(page, live_server_proc):
    open_lobby(page, live_server_proc)
    unbuilt = [(m.key, m.label) for m in MODES if m.room_kind is None and not m.available]
    for key, label in unbuilt:
        page.get_by_role("tab", name=label).click()
        expect(page.get_by_test_id(f"unavailable-{key}")).to_be_visible()
        expect(page).to_have_url(re.compile(rf"#{key}$"))


def test_name_clash_across_kinds_is_explained(page, live_server_proc):
    open_lobby(page, live_server_proc, "#echo")
    page.get_by_test_id("room-name-echo").fill("Shared Name")
    page.get_by_test_id("join-echo").click()
    expect(page).to_have_url(re.compile(r"/rooms/shared-name/$"))
    open_lobby(page, live_server_proc, "#mesh")
    page.get_by_test_id("room-name-mesh").fill("shared name")
    page.get_by_test_id("join-mesh").click()
    expect(page.locator(".message.error")).to_contain_text("already a server echo room")


def test_rename_identity(page, live_server_proc):
    open_lobby(page, live_server_proc)
    ident_before = page.locator('meta[name="rtc-identity"]').get_attribute("content")
    field = page.get_by_test_id("display-name")
    field.fill("Grace Hopper")
    page.get_by_role("button", name="Rename").click()
    expect(page.locator(".message.success")).to_contain_text("Grace Hopper")
    expect(page.get_by_test_id("display-name")).to_have_value("Grace Hopper")
    assert page.locator('meta[name="rtc-identity"]').get_attribute("content") == ident_before
    # the new name travels in the new token: the lobby socket greets us by it
    page.wait_for_function("window.rtcLobbyHello?.you.name === 'Grace Hopper'")


def test_unknown_room_is_404(page, live_server_proc):
    response = page.goto(f"{live_server_proc.url}/rooms/no-such-room/")
    assert response.status == 404
