"""The publisher page in real Chromium (fake camera): create a stream, publish, stop.

Over HTTP a low-latency stream (the form's default): the page says so and records 100 ms
chunks; over the WebSocket a standard one (box unticked): 250 ms chunks. The outputs are
checked on disk here; tests/e2e/test_stream_viewers.py plays them.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.support.ingest import start_publishing_in_page


@pytest.mark.parametrize(("transport", "low_latency"), [("http", None), ("ws", False)])
def test_publish_from_the_browser_then_stop(page, live_server_proc, transport, low_latency):
    server = live_server_proc
    slug = start_publishing_in_page(
        page, server, f"Browser {transport}", transport, low_latency=low_latency
    )
    assert re.fullmatch(r"browser-[a-z]+-[a-z0-9]{6}", slug)
    # The stream's mode, stated on the page, and the chunk the recorder was started with.
    is_ll = low_latency is None  # the default (STREAM_LOW_LATENCY_DEFAULT=1)
    mode = page.get_by_test_id("stream-mode").inner_text()
    assert ("low latency" in mode) is is_ll and ("standard" in mode) is not is_ll
    timeslice = 100 if is_ll else 250
    expect(page.get_by_test_id("timeslice")).to_have_value(str(timeslice))
    assert page.evaluate("window.rtcPublisher.timeslice") == timeslice
    # Wait for a few segments to be written (the server reports them in each ack).
    expect(page.get_by_test_id("pub-segments")).to_have_text(
        re.compile(r"^[3-9]|\d\d"), timeout=20_000
    )
    assert page.get_by_test_id("pub-error").inner_text() == "—"
    assert "kbit/s" in page.get_by_test_id("pub-bitrate").inner_text()
    capture_ms = int(page.locator("#publisher").get_attribute("data-capture-ms"))
    page.get_by_test_id("stop").click()
    expect(page.locator("#publisher")).to_have_attribute("data-pub-state", "ended", timeout=30_000)
    expect(page.get_by_test_id("stream-status")).to_have_text("Ended")

    out = server.workdir / "media" / "streams" / slug
    text = (out / "media_0.m3u8").read_text()
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    assert 'type="static"' in (out / "manifest.mpd").read_text()
    assert (
        "480p" in (out / "master.m3u8").read_text()
        or "RESOLUTION=640x480" in (out / "master.m3u8").read_text()
    )
    assert (out / "low-latency.json").exists() is is_ll
    # The page sent its (server-synced) capture clock with the first chunk.
    assert f'"capture_ms": {capture_ms}' in (out / "clock.json").read_text()
    assert '"source": "publisher"' in (out / "clock.json").read_text()
