"""The lobby in real Chromium: tabs, live socket, create/join rooms of each kind, rename."""

import re

import pytest
from playwright.sync_api import expect

from rooms.modes import MODES

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
    expect(page.locator("video").first).to_be_attached()  # every kind has its media part

    open_lobby(page, live_server_proc, f"#{kind}")
    card = page.locator(f'[data-panel="{kind}"] [data-room="{slug}"]')
    expect(card).to_be_visible()
    card.get_by_role("link", name=name).click()
    expect(page).to_have_url(re.compile(rf"/rooms/{slug}/$"))


def test_every_tab_opens_its_panel(page, live_server_proc):
    open_lobby(page, live_server_proc)
    for mode in MODES:
        page.get_by_role("tab", name=mode.label).click()
        expect(page.locator(f'[data-panel="{mode.key}"]')).to_be_visible()
        expect(page).to_have_url(re.compile(rf"#{mode.key}$"))
    expect(page.get_by_text("not available yet")).to_have_count(0)


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
