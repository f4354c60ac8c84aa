"""A lobby with more rooms than it lists (200 per kind) in real Chromium: a presence event
for a room without a card does not make the lobby fetch ``/`` again (every lobby did, on
every such event), shown cards still count right, and a room created meanwhile still gets
its card (the ``room`` event: one fetch)."""

from __future__ import annotations

from playwright.sync_api import expect

ROOMS = 205  # mesh rooms: the lobby lists the newest 200


def make_rooms(server) -> None:
    server.manage(
        "shell",
        "-c",
        "import datetime\n"
        "from django.utils import timezone\n"
        "from rooms.models import Room\n"
        f"for i in range({ROOMS}):\n"
        "    Room.objects.create(slug=f'r{i}', title=f'R{i}', kind='mesh')\n"
        "old = timezone.now() - datetime.timedelta(days=30)\n"
        "Room.objects.create(slug='old-room', title='Old room', kind='mesh')\n"
        "Room.objects.filter(slug='old-room').update(created_at=old)\n",
    )


def test_presence_in_a_room_without_a_card_does_not_refetch_the_lobby(
    chromium_browser, live_server_proc
):
    url = live_server_proc.url
    make_rooms(live_server_proc)
    watcher_ctx = chromium_browser.new_context()
    visitor_ctx = chromium_browser.new_context()
    try:
        lobby = watcher_ctx.new_page()
        lobby.goto(f"{url}/#mesh")
        expect(lobby.locator("body")).to_have_attribute("data-lobby", "connected")
        assert lobby.locator('.room-card[data-room="old-room"]').count() == 0
        assert lobby.locator("[data-testid=rooms-mesh] .room-card").count() == 200
        fetches: list[str] = []
        lobby.on(
            "request",
            lambda request: fetches.append(request.url) if request.url == f"{url}/" else None,
        )

        # someone in the room without a card, then in a shown one (events arrive in order:
        # once the shown card counts them, the first event has been handled too)
        visitor = visitor_ctx.new_page()
        visitor.goto(f"{url}/rooms/old-room/")
        expect(visitor.get_by_test_id("participants")).to_contain_text("(you)")
        shown = visitor_ctx.new_page()
        shown.goto(f"{url}/rooms/r204/")
        expect(shown.get_by_test_id("participants")).to_contain_text("(you)")
        expect(lobby.get_by_test_id("count-r204")).to_have_text("1")
        visitor.close()
        shown.close()
        expect(lobby.get_by_test_id("count-r204")).to_have_text("0")
        assert fetches == [], fetches

        # a new room is announced: the lobby fetches its lists once and shows the card
        creator = visitor_ctx.new_page()
        creator.goto(f"{url}/#mesh")
        creator.get_by_test_id("room-name-mesh").fill("Brand new")
        creator.get_by_test_id("join-mesh").click()
        expect(creator.get_by_test_id("participants")).to_contain_text("(you)")
        expect(lobby.get_by_test_id("count-brand-new")).to_have_text("1")
        assert len(fetches) == 1, fetches
    finally:
        watcher_ctx.close()
        visitor_ctx.close()
