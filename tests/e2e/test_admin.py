"""Django admin in real Chromium: a staff user logs in and sees the Room changelist."""

import re

from playwright.sync_api import expect

PASSWORD = "correct-horse-battery-staple-42"


def test_staff_login_and_room_changelist(page, live_server_proc):
    live_server_proc.manage(
        "createsuperuser",
        "--noinput",
        "--username",
        "admin",
        "--email",
        "admin@example.org",
        extra_env={"DJANGO_SUPERUSER_PASSWORD": PASSWORD},
    )
    # a visitor creates a room from the lobby
    page.goto(f"{live_server_proc.url}/#relay")
    page.get_by_test_id("room-name-relay").fill("Admin Visible")
    page.get_by_test_id("join-relay").click()
    expect(page).to_have_url(re.compile(r"/rooms/admin-visible/$"))

    page.goto(f"{live_server_proc.url}/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_contain_text("rtcsite admin")

    page.goto(f"{live_server_proc.url}/admin/rooms/room/")
    row = page.locator("#result_list tbody tr", has_text="Admin Visible")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("relay")
    expect(page.locator("#changelist-filter")).to_contain_text("By kind")
    expect(page.locator("#changelist-filter")).to_contain_text("By open")

    # the admin-only close action
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "close_rooms")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("Closed 1 room")
    response = page.goto(f"{live_server_proc.url}/rooms/admin-visible/")
    assert response.status == 403
    expect(page.get_by_test_id("room-closed")).to_be_visible()


def test_wrong_password_refused(page, live_server_proc):
    page.goto(f"{live_server_proc.url}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "wrong")
    page.click("input[type=submit]")
    expect(page.locator(".errornote")).to_be_visible()


def test_admin_shows_live_presence_and_room_counts(page, browser_context, live_server_proc):
    live_server_proc.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.filter(username='watcher').exists() or "
        "User.objects.create_superuser('watcher', 'w@example.org', 'pw-watcher-123')",
    )
    participant = browser_context.browser.new_context()
    try:
        guest = participant.new_page()
        guest.goto(f"{live_server_proc.url}/#mesh")
        guest.get_by_test_id("display-name").fill("Present Paula")
        guest.get_by_role("button", name="Rename").click()
        guest.get_by_test_id("room-name-mesh").fill("Counted Room")
        guest.get_by_test_id("join-mesh").click()
        expect(guest.locator('[data-room="counted-room"]')).to_have_attribute("data-joined", "true")

        page.goto(f"{live_server_proc.url}/admin/login/?next=/admin/presence/livepresence/")
        page.fill("#id_username", "watcher")
        page.fill("#id_password", "pw-watcher-123")
        page.click("input[type=submit]")
        row = page.locator("#result_list tbody tr", has_text="Present Paula")
        expect(row).to_contain_text("counted-room")
        expect(row).to_contain_text(":")  # host:pid of the Daphne process

        page.goto(f"{live_server_proc.url}/admin/rooms/room/?q=counted")
        counted = page.locator("#result_list tbody tr", has_text="Counted Room")
        expect(counted.locator("td.field-participants")).to_have_text("1")

        guest.close()
        page.goto(f"{live_server_proc.url}/admin/presence/livepresence/")
        expect(page.locator("#result_list")).not_to_contain_text("Present Paula")
    finally:
        participant.close()
