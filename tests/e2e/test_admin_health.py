"""The admin's process health page in real Chromium, under the enforced CSP: linked from the
admin's index, it draws this process's record and redraws it as sockets open."""

import re

from playwright.sync_api import expect

PASSWORD = "correct-horse-battery-staple-42"


def test_health_page_refreshes_live_under_the_enforced_csp(browser_context, daphne_factory):
    server = daphne_factory(
        {"CONTENT_SECURITY_POLICY_REPORT_ONLY": "0", "HEALTH_PUBLISH_INTERVAL": "1"}
    )
    server.manage(
        "createsuperuser",
        "--noinput",
        "--username",
        "ops",
        "--email",
        "ops@example.org",
        extra_env={"DJANGO_SUPERUSER_PASSWORD": PASSWORD},
    )
    page = browser_context.new_page()
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    page.goto(f"{server.url}/admin/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.get_by_role("link", name="Process health").click()
    expect(page).to_have_url(re.compile(r"/admin/health/$"))

    row = page.locator("#health-processes tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(f":{server.pid}")
    expect(page.locator("#health-checks")).to_contain_text("database ok")

    lobby = browser_context.new_page()
    lobby.goto(f"{server.url}/")  # the lobby page opens its socket
    expect(row).to_contain_text("lobby 1", timeout=30_000)
    lobby.close()
    expect(row).not_to_contain_text("lobby 1", timeout=30_000)
    assert refused == []
