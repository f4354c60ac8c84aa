"""Low-latency live streams watched in real Chromium: the viewer page's two modes.

A publisher page (fake camera, WebSocket ingest) streams through the real pipeline into a
low-latency stream (``STREAM_LOW_LATENCY_DEFAULT=1``: LL-HLS parts and LL-DASH chunks from
the origin). hls.js and dash.js open it in low-latency mode: the readout says so, hls.js
plays parts (``lowLatencyMode``, parts in its playlist, blocking reloads with ``_HLS_msn``)
and dash.js runs its low-latency mode; frames advance, and stopping
ends them cleanly. ``?latency=standard`` plays the same stream in whole segments (dash.js
not in its low-latency mode). On a standard stream ``?latency=low`` plays standard with a
note. No page ever asks anything of another host (dash.js's default time server).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.e2e.test_stream_viewers import WAIT_MS, expect_playing
from tests.support.daphne import DaphneServer
from tests.support.ingest import start_publishing_in_page

pytestmark = pytest.mark.timeout(900)

PLAYERS = ("hls", "dash")
KIND = {"hls": "hls.js", "dash": "dash.js"}


def started(env: dict[str, str]) -> Iterator[DaphneServer]:
    server = DaphneServer(env=env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ll_server() -> Iterator[DaphneServer]:
    """New streams are low-latency streams."""
    yield from started({"STREAM_LOW_LATENCY_DEFAULT": "1"})


@pytest.fixture(scope="module")
def standard_server() -> Iterator[DaphneServer]:
    """New streams are standard streams."""
    yield from started({"STREAM_LOW_LATENCY_DEFAULT": "0"})


class Viewer:
    """A viewer page, with what it asked of which host and its uncaught errors."""

    def __init__(self, context, server, path: str) -> None:
        self.page = context.new_page()
        self.requests: list[str] = []
        self.xhr: list[str] = []  # dash.js's requests (the page's own use fetch)
        # segment requests: (resource type, byte range asked for or None)
        self.segments: list[tuple[str, str | None]] = []
        self.errors: list[str] = []
        self.page.on("request", self.on_request)
        self.page.on("pageerror", lambda error: self.errors.append(f"{error}\n{error.stack}"))
        self.server = server
        self.page.goto(f"{server.url}{path}")
        self.root = self.page.locator("#viewer")

    def on_request(self, request) -> None:
        self.requests.append(request.url)
        if request.resource_type == "xhr":
            self.xhr.append(request.url)
        if ".m4s" in request.url and request.method == "GET":  # the page itself HEADs them
            self.segments.append((request.resource_type, request.headers.get("range")))

    def expect_mode(self, mode: str) -> None:
        expect(self.root).to_have_attribute("data-latency-mode", mode)
        label = "low latency" if mode == "low" else "standard"
        expect(self.page.get_by_test_id("latency-mode")).to_have_text(label, timeout=WAIT_MS)

    def expect_live_readout(self) -> None:
        self.page.wait_for_function(
            "document.getElementById('viewer').dataset.latencyMs", timeout=WAIT_MS
        )
        expect(self.page.get_by_test_id("latency")).to_have_text(
            re.compile(r"^-?\d+\.\d s$"), timeout=WAIT_MS
        )

    def foreign_requests(self) -> list[str]:
        """Requests to anything but this site (blob: and data: are the page's own)."""
        return [
            url
            for url in self.requests
            if not url.startswith((self.server.url + "/", "blob:", "data:"))
        ]

    def assert_whole_segments(self) -> None:
        """Segments read whole: no byte range asked for (hls.js's parts), none read by
        dash.js's low-latency fetch loader (its XHR loader reads whole responses)."""
        assert self.segments, "no segment requested"
        whole = all(kind == "xhr" and rng is None for kind, rng in self.segments)
        assert whole, self.segments[-10:]

    def expect_ended_cleanly(self) -> None:
        expect(self.root).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
        expect(self.page.get_by_test_id("live-indicator")).to_have_text("ended", timeout=WAIT_MS)
        assert "error" not in (self.root.get_attribute("data-player-state") or "")
        assert not self.errors, self.errors  # uncaught page errors, with their stacks
        assert not self.foreign_requests(), self.foreign_requests()


def test_low_latency_stream_in_low_and_standard_mode_with_hls_js_and_dash_js(
    browser_context, ll_server
):
    server = ll_server
    browser_context.set_default_timeout(WAIT_MS)
    lobby = browser_context.new_page()
    lobby.goto(f"{server.url}/#streams")
    expect(lobby.locator("body")).to_have_attribute("data-lobby", "connected", timeout=WAIT_MS)
    publisher = browser_context.new_page()
    slug = start_publishing_in_page(publisher, server, "Low latency show", "ws")
    # The lobby and the stream page say that the stream offers low latency.
    expect(lobby.get_by_test_id(f"stream-status-{slug}")).to_have_text("Live", timeout=WAIT_MS)
    expect(lobby.get_by_test_id(f"low-latency-{slug}")).to_be_visible()
    detail = browser_context.new_page()
    detail.goto(f"{server.url}/streams/{slug}/")
    expect(detail.get_by_test_id("low-latency-offered")).to_be_visible()
    detail.close()

    # Low-latency mode: the default for a low-latency stream.
    viewers = {
        player: Viewer(browser_context, server, f"/streams/{slug}/{player}/") for player in PLAYERS
    }
    for player, viewer in viewers.items():
        viewer.expect_mode("low")
        expect_playing(viewer.page)
        # hls.js: lowLatencyMode with parts in its playlist; dash.js: its low-latency mode.
        expect(viewer.root).to_have_attribute("data-player-low-latency", "true", timeout=WAIT_MS)
        viewer.expect_live_readout()
        expect(viewer.page.get_by_test_id("latency-note")).to_contain_text(
            f"{KIND[player]} estimates", timeout=WAIT_MS
        )
        expect(viewer.page.get_by_test_id("player-state")).to_contain_text(KIND[player])
    # Stalls depend on the machine's load: counted by `bench stream_latency`, not here.
    for viewer in viewers.values():
        expect_playing(viewer.page)  # still advancing a while later
    hls, dash = viewers["hls"], viewers["dash"]
    # hls.js asked for playlist updates with blocking reloads (it only does so for an LL
    # playlist with CAN-BLOCK-RELOAD=YES); dash.js synced its clock with /streams/time/.
    assert any("_HLS_msn=" in url for url in hls.requests), hls.requests[-20:]
    assert any(url.endswith("/streams/time/") for url in dash.xhr), dash.xhr[:20]
    for viewer in viewers.values():
        assert not viewer.foreign_requests(), viewer.foreign_requests()

    # LL: hls.js asked for parts (byte ranges); dash.js read segments with its fetch loader.
    assert any(rng for _, rng in hls.segments), hls.segments[-10:]
    assert any(kind == "fetch" for kind, _ in dash.segments), dash.segments[-10:]

    # Standard mode on the same stream: one click on the mode switch, whole segments.
    for viewer in viewers.values():
        viewer.page.get_by_test_id("latency-choice-standard").click()
        expect(viewer.page).to_have_url(re.compile(r"\?latency=standard$"))
        viewer.segments.clear()  # the new page's only
        viewer.expect_mode("standard")
        expect_playing(viewer.page)
        expect(viewer.root).to_have_attribute("data-player-low-latency", "false")
        viewer.expect_live_readout()
        expect(viewer.page.get_by_test_id("latency-choice-low")).to_have_attribute(
            "href", "?latency=low"
        )
        viewer.assert_whole_segments()

    # dash.js in its low-latency mode up to the end: the live MPD's announced segments
    # (streaming/lldash.py) give way to the final static MPD.
    ll_dash = Viewer(browser_context, server, f"/streams/{slug}/dash/")
    ll_dash.expect_mode("low")
    expect_playing(ll_dash.page)
    expect(ll_dash.root).to_have_attribute("data-player-low-latency", "true", timeout=WAIT_MS)

    publisher.get_by_test_id("stop").click()
    expect(publisher.locator("#publisher")).to_have_attribute(
        "data-pub-state", "ended", timeout=3 * WAIT_MS
    )
    for viewer in [*viewers.values(), ll_dash]:
        viewer.expect_ended_cleanly()


def test_low_latency_asked_of_a_standard_stream_plays_standard_with_a_note(
    browser_context, standard_server
):
    server = standard_server
    browser_context.set_default_timeout(WAIT_MS)
    lobby = browser_context.new_page()
    lobby.goto(f"{server.url}/#streams")
    expect(lobby.locator("body")).to_have_attribute("data-lobby", "connected", timeout=WAIT_MS)
    publisher = browser_context.new_page()
    slug = start_publishing_in_page(publisher, server, "Standard show", "ws")
    expect(lobby.get_by_test_id(f"stream-status-{slug}")).to_have_text("Live", timeout=WAIT_MS)
    expect(lobby.get_by_test_id(f"low-latency-{slug}")).to_have_count(0)

    viewers = {
        player: Viewer(browser_context, server, f"/streams/{slug}/{player}/?latency=low")
        for player in PLAYERS
    }
    for player, viewer in viewers.items():
        expect(viewer.page.get_by_test_id("latency-fallback")).to_contain_text(
            "does not offer low latency"
        )
        viewer.expect_mode("standard")
        expect(viewer.page.get_by_test_id("latency-choice-low")).to_have_attribute(
            "aria-disabled", "true"
        )
        expect_playing(viewer.page)
        expect(viewer.root).to_have_attribute("data-player-low-latency", "false", timeout=WAIT_MS)
        viewer.expect_live_readout()
        expect(viewer.page.get_by_test_id("player-state")).to_contain_text(KIND[player])
        viewer.assert_whole_segments()
    # dash.js synced its clock with the MPD's UTCTiming only: this site's /streams/time/.
    assert any(url.endswith("/streams/time/") for url in viewers["dash"].xhr)

    publisher.get_by_test_id("stop").click()
    expect(publisher.locator("#publisher")).to_have_attribute(
        "data-pub-state", "ended", timeout=3 * WAIT_MS
    )
    for viewer in viewers.values():
        viewer.expect_ended_cleanly()
