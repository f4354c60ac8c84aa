"""The publisher page in real Chromium (fake camera): create a stream, publish, stop.

The viewer pages (hls.js / dash.js) are not built yet; the outputs are checked on disk.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect


@pytest.mark.parametrize("transport", ["http", "ws"])
def test_publish_from_the_browser_then_stop(page, live_server_proc, transport):
    server = live_server_proc
    page.goto(f"{server.url}/streams/")
    page.get_by_test_id("stream-title").fill(f"Browser {transport}")
    page.get_by_test_id("create-stream").click()
    expect(page).to_have_url(re.compile(r"/streams/browser-[a-z]+-[a-z0-9]{6}/publish/$"))
    slug = page.url.rstrip("/").split("/")[-2]
    key = page.get_by_test_id("new-key").inner_text()
    assert key.startswith("sk_")
    expect(page.get_by_test_id("publish-key")).to_have_value(key)

    page.get_by_test_id("transport").select_option(transport)
    page.get_by_test_id("start").click()
    expect(page.locator("#publisher")).to_have_attribute("data-pub-state", "live")
    # Wait for a few segments to be written (the server reports them in each ack).
    expect(page.get_by_test_id("pub-segments")).to_have_text(
        re.compile(r"^[3-9]|\d\d"), timeout=20_000
    )
    assert page.get_by_test_id("pub-error").inner_text() == "—"
    assert "kbit/s" in page.get_by_test_id("pub-bitrate").inner_text()
    page.get_by_test_id("stop").click()
    expect(page.locator("#publisher")).to_have_attribute("data-pub-state", "ended", timeout=30_000)
    expect(page.get_by_test_id("stream-status")).to_have_text("ended")

    out = server.workdir / "media" / "streams" / slug
    text = (out / "media_0.m3u8").read_text()
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    assert 'type="static"' in (out / "manifest.mpd").read_text()
    assert (
        "480p" in (out / "master.m3u8").read_text()
        or "RESOLUTION=640x480" in (out / "master.m3u8").read_text()
    )
