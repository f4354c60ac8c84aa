"""The Content-Security-Policy holds in real Chromium: the lobby, a mesh room, publishing,
both players and the face page (face-api in the browser) run without one violation.

Violations are collected from ``securitypolicyviolation`` events (an init script in every
page reports them through a binding) and from console messages that name the policy.
"""

from __future__ import annotations

import re
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.support.daphne import DaphneServer
from tests.support.ingest import start_publishing_in_page

WAIT_MS = 60_000
REPORT = """
document.addEventListener("securitypolicyviolation", (e) => window.__cspViolation(
  `${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));
"""


@pytest.fixture
def enforcing_server(tmp_path):
    """The site with its policy enforced (the shared test servers only report: see
    tests/support/daphne.py)."""
    server = DaphneServer(workdir=tmp_path, env={"CONTENT_SECURITY_POLICY_REPORT_ONLY": "0"})
    server.start()
    yield server
    server.stop()


def playing(viewer) -> None:
    """The playhead moves (polled from Python: wait_for_function would eval a string)."""
    expect(viewer.locator("#viewer")).to_have_attribute(
        "data-video-width", re.compile(r"^[1-9]\d*$"), timeout=WAIT_MS
    )
    start = viewer.evaluate("document.getElementById('video').currentTime")
    for _ in range(WAIT_MS // 100):
        if viewer.evaluate("document.getElementById('video').currentTime") > start + 0.5:
            return
        viewer.wait_for_timeout(100)
    pytest.fail("the video did not play")


def test_pages_run_without_csp_violations(browser_context, enforcing_server):
    server = enforcing_server
    assert "Content-Security-Policy" in urllib.request.urlopen(server.url + "/").headers
    violations: list[str] = []
    browser_context.expose_binding("__cspViolation", lambda _source, text: violations.append(text))
    browser_context.add_init_script(REPORT)
    browser_context.set_default_timeout(WAIT_MS)

    def watch_console(page):
        page.on(
            "console",
            lambda msg: "Content Security Policy" in msg.text and violations.append(msg.text),
        )
        return page

    lobby = watch_console(browser_context.new_page())
    lobby.goto(f"{server.url}/")
    expect(lobby.locator("body")).to_have_attribute("data-lobby", "connected")
    lobby.get_by_test_id("room-name-mesh").fill("csp check")
    lobby.get_by_test_id("join-mesh").click()
    expect(lobby).to_have_url(re.compile(r"/rooms/[a-z0-9-]+/$"))
    lobby.wait_for_load_state("networkidle")

    publisher = watch_console(browser_context.new_page())
    slug = start_publishing_in_page(publisher, server, "CSP check", "ws")
    # Enter in the key field must not submit the controls' form (was an inline onsubmit).
    url = publisher.url
    publisher.get_by_test_id("publish-key").press("Enter")
    assert publisher.url == url
    expect(publisher.locator("#publisher")).to_have_attribute("data-pub-state", "live")

    for player in ("hls", "dash"):
        viewer = watch_console(browser_context.new_page())
        viewer.goto(f"{server.url}/streams/{slug}/{player}/")
        expect(viewer.locator("#viewer")).to_have_attribute("data-state", "live")
        playing(viewer)

    faces = watch_console(browser_context.new_page())
    faces.goto(f"{server.url}/faces/")
    expect(faces.locator("#faces")).to_have_attribute("data-camera", "on")
    assert violations == []
    faces.get_by_test_id("face-detector").select_option("browser")
    expect(faces.get_by_test_id("face-backend")).to_contain_text("face-api on", timeout=WAIT_MS)
    faces.get_by_test_id("face-interval").press("Enter")
    assert faces.url.endswith("/faces/")

    publisher.get_by_test_id("stop").click()
    expect(publisher.locator("#publisher")).to_have_attribute("data-pub-state", "ended")
    assert violations == []
