"""Live presence in Chromium: a lobby page sees another page join and leave a room."""

import re

from playwright.sync_api import expect


def test_lobby_card_follows_a_participant(chromium_browser, live_server_proc):
    url = live_server_proc.url
    watcher_ctx = chromium_browser.new_context()
    visitor_ctx = chromium_browser.new_context()  # another browser profile: another identity
    try:
        watcher = watcher_ctx.new_page()
        watcher.goto(f"{url}/#mesh")
        watcher.get_by_test_id("room-name-mesh").fill("Presence Room")
        watcher.get_by_test_id("join-mesh").click()
        expect(watcher).to_have_url(re.compile(r"/rooms/presence-room/$"))
        watcher.goto(f"{url}/#mesh")
        expect(watcher.locator("body")).to_have_attribute("data-lobby", "connected")
        expect(watcher.get_by_test_id("count-presence-room")).to_have_text("0")

        visitor = visitor_ctx.new_page()
        visitor.goto(f"{url}/")
        visitor.get_by_test_id("display-name").fill("Visiting Vera")
        visitor.get_by_role("button", name="Rename").click()
        visitor.goto(f"{url}/rooms/presence-room/")
        expect(visitor.get_by_test_id("participants")).to_contain_text("Visiting Vera (you)")

        people = watcher.get_by_test_id("people-presence-room")
        expect(people).to_contain_text("Visiting Vera")
        expect(watcher.get_by_test_id("count-presence-room")).to_have_text("1")

        visitor.close()  # closing the tab ends its socket
        expect(people).not_to_contain_text("Visiting Vera")
        expect(watcher.get_by_test_id("count-presence-room")).to_have_text("0")
    finally:
        watcher_ctx.close()
        visitor_ctx.close()


def test_full_room_shows_full_and_refuses(chromium_browser, live_server_proc):
    url = live_server_proc.url
    contexts = [chromium_browser.new_context() for _ in range(3)]
    try:
        first, second, watcher = (ctx.new_page() for ctx in contexts)
        first.goto(f"{url}/#echo")
        first.get_by_test_id("room-name-echo").fill("Solo Echo")
        first.get_by_test_id("join-echo").click()
        expect(first.locator('[data-room="solo-echo"]')).to_have_attribute("data-joined", "true")

        watcher.goto(f"{url}/#echo")
        card = watcher.locator('.room-card[data-room="solo-echo"]')
        expect(card.locator(".full-badge")).to_be_visible()

        second.goto(f"{url}/rooms/solo-echo/")
        expect(second.get_by_test_id("room-banner")).to_contain_text("is full")
        expect(second.locator('[data-room="solo-echo"]')).to_have_attribute(
            "data-refused", "room-full"
        )
        expect(first.get_by_test_id("participants").locator("li")).to_have_count(1)
    finally:
        for ctx in contexts:
            ctx.close()
