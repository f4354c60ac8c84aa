"""Live streams watched in real Chromium: hls.js and dash.js viewer pages, the lobby tab.

A publisher page (fake camera) streams through the real pipeline, by HTTP POST or over
the WebSocket ingest; one viewer page plays it with hls.js and another with dash.js
(frames decoded: ``videoWidth > 0``; ``currentTime`` advancing), both count two viewers,
list the ladder in the quality selector and show a latency readout; the lobby's "Live
streams" tab follows the stream's status live; stopping ends the stream for viewers.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.support.ingest import start_publishing_in_page

pytestmark = pytest.mark.timeout(900)

# Generous: the machines running these are shared and often heavily loaded (load 20+ on
# 2 cores seen), and the publisher, FFmpeg and two players all need CPU at once.
WAIT_MS = 120_000

PLAYERS = ("hls", "dash")


def expect_playing(viewer) -> None:
    """Frames decoded and the playhead moving (twice, so a stall would fail)."""
    root = viewer.locator("#viewer")
    expect(root).to_have_attribute("data-video-width", re.compile(r"^[1-9]\d*$"), timeout=WAIT_MS)
    for _ in range(2):
        before = viewer.evaluate("document.getElementById('video').currentTime")
        viewer.wait_for_function(
            f"document.getElementById('video').currentTime > {before} + 0.5", timeout=WAIT_MS
        )


@pytest.mark.parametrize("transport", ["http", "ws"])
def test_watch_with_hls_js_and_dash_js_then_stop(browser_context, live_server_proc, transport):
    server = live_server_proc
    browser_context.set_default_timeout(WAIT_MS)
    lobby = browser_context.new_page()
    lobby.goto(f"{server.url}/#streams")
    expect(lobby.locator("body")).to_have_attribute("data-lobby", "connected", timeout=WAIT_MS)

    publisher = browser_context.new_page()
    slug = start_publishing_in_page(publisher, server, f"Watch {transport}", transport)
    # The lobby learns that the stream went live without a reload.
    expect(lobby.get_by_test_id(f"stream-status-{slug}")).to_have_text("Live", timeout=WAIT_MS)
    expect(lobby.get_by_test_id(f"watch-hls-{slug}")).to_be_visible(timeout=WAIT_MS)

    viewers = {}
    for player in PLAYERS:
        viewer = browser_context.new_page()
        viewer.goto(f"{server.url}/streams/{slug}/{player}/")
        viewers[player] = viewer
    for player, viewer in viewers.items():
        root = viewer.locator("#viewer")
        expect(root).to_have_attribute("data-state", "live", timeout=WAIT_MS)
        expect(viewer.get_by_test_id("live-indicator")).to_contain_text("LIVE", timeout=WAIT_MS)
        expect_playing(viewer)
        assert viewer.evaluate("document.getElementById('video').videoWidth") > 0
        expect(viewer.get_by_test_id("player-state")).to_contain_text(
            "hls.js" if player == "hls" else "dash.js", timeout=WAIT_MS
        )
        # The ladder for a 480p camera: 480p + 360p, plus "auto".
        expect(root).to_have_attribute("data-rungs", "480p,360p", timeout=WAIT_MS)
        options = viewer.get_by_test_id("quality").locator("option").all_inner_texts()
        assert options == ["auto", "480p", "360p"], options
        # A latency readout computed from the capture clock (no threshold: it exists).
        viewer.wait_for_function("document.getElementById('viewer').dataset.latencyMs")
        expect(viewer.get_by_test_id("latency")).to_have_text(
            re.compile(r"^-?\d+\.\d s$"), timeout=WAIT_MS
        )
        expect(viewer.get_by_test_id("viewers")).to_have_text("2", timeout=WAIT_MS)
    expect(lobby.get_by_test_id(f"viewers-{slug}")).to_have_text("2", timeout=WAIT_MS)
    # The dash.js page re-reads the live MPD once per segment (dash.js alone: at most once
    # a second), through dash.js's own refresh: it completes, and playback goes on.
    dash = viewers["dash"]
    dash.wait_for_function("(window.rtcViewer.mpdRefreshes || 0) >= 2", timeout=WAIT_MS)
    expect_playing(dash)

    # Choosing a rung switches to it (hls.js level / dash.js representation).
    hls = viewers["hls"]
    hls.get_by_test_id("quality").select_option(label="360p")
    expect(hls.get_by_test_id("quality-now")).to_have_text("playing 360p", timeout=WAIT_MS)

    publisher.get_by_test_id("stop").click()
    # Stopping first uploads the publisher's backlog: on a loaded machine (load 20, one
    # HTTP POST per second) that was 80+ chunks.
    expect(publisher.locator("#publisher")).to_have_attribute(
        "data-pub-state", "ended", timeout=3 * WAIT_MS
    )
    for viewer in viewers.values():
        expect(viewer.locator("#viewer")).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
        expect(viewer.get_by_test_id("live-indicator")).to_have_text("ended", timeout=WAIT_MS)
    expect(lobby.get_by_test_id(f"stream-status-{slug}")).to_have_text("Ended", timeout=WAIT_MS)

    # A viewer leaving is counted down; an ended stream stays watchable (VOD).
    viewers["dash"].close()
    expect(viewers["hls"].get_by_test_id("viewers")).to_have_text("1", timeout=WAIT_MS)
    vod = browser_context.new_page()
    vod.goto(f"{server.url}/streams/{slug}/dash/")
    expect(vod.get_by_test_id("live-indicator")).to_have_text("ended", timeout=WAIT_MS)
    expect_playing(vod)
    expect(vod.get_by_test_id("latency")).to_have_text("— (recording)", timeout=WAIT_MS)
