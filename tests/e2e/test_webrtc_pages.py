"""The publisher and viewer pages over WebRTC, and the pages as a person meets them (issue 17).

A publisher page (fake camera, 640x480) publishes over WHIP (static/js/whip.js); WebRTC viewer
pages play the stream over WHEP (static/js/whep.js): frames decoded at the rendition's size
(640x480: the camera's, no larger than 480p), the playhead advancing, H.264 received (the
server's one encode, packetised as is), a readout of the server-to-screen latency; a second
viewer joining mid-stream gets a picture; stopping ends the stream for both. The status line
of the publisher page follows the stream (it was loaded while the stream was idle).

Item 6: every page gets its icon (``/favicon.ico`` and the ``<link rel=icon>``), and the
publisher, HLS, DASH, stream and lobby pages ask for nothing that is missing and log no
errors, nor dash.js's CMCD warning, while a stream plays.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.support.daphne import DaphneServer
from tests.support.ingest import start_publishing_in_page

pytestmark = pytest.mark.timeout(900)

# Generous: shared, often loaded machines (see test_stream_viewers.py).
WAIT_MS = 120_000
# Content-Security-Policy violations, reported through a binding (as tests/e2e/test_csp.py).
CSP_REPORT = """
document.addEventListener("securitypolicyviolation", (e) => window.__cspViolation(
  `${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));
"""


def expect_frames_advancing(page) -> None:
    """Frames decoded and the playhead moving (twice, so a frozen picture would fail). Polled
    from Python: the pages run under the enforced CSP, where wait_for_function's string is
    refused."""
    expect(page.locator("#viewer")).to_have_attribute(
        "data-video-width", re.compile(r"^[1-9]\d*$"), timeout=WAIT_MS
    )
    for _ in range(2):
        start = page.evaluate("document.getElementById('video').currentTime")
        for _ in range(WAIT_MS // 100):
            if page.evaluate("document.getElementById('video').currentTime") > start + 0.5:
                break
            page.wait_for_timeout(100)
        else:
            pytest.fail("the video did not play on")


def received_video_codec(page) -> str:
    """The codec of the video the page's WHEP peer received (from getStats)."""
    return page.evaluate(
        """async () => {
            const pc = window.rtcViewer.player.whep.pc;
            const stats = await pc.getStats();
            let codecId = null;
            const codecs = new Map();
            stats.forEach((s) => {
                if (s.type === "codec") codecs.set(s.id, s.mimeType);
                const video = s.type === "inbound-rtp" && s.kind === "video";
                if (video && s.framesDecoded > 0) codecId = s.codecId;
            });
            return codecs.get(codecId) || "";
        }"""
    )


def open_webrtc_viewer(context, server, slug):
    viewer = context.new_page()
    console: list[str] = []
    viewer.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    viewer.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
    viewer.goto(f"{server.url}/streams/{slug}/webrtc/")
    return viewer, console


@pytest.fixture(scope="module")
def enforcing_server():
    """The site with its Content-Security-Policy enforced (the shared test servers only
    report it): whip.js and whep.js must run under it."""
    server = DaphneServer(env={"CONTENT_SECURITY_POLICY_REPORT_ONLY": "0"}).start()
    yield server
    server.stop()


def test_publish_over_whip_and_watch_over_whep(browser_context, enforcing_server):
    server = enforcing_server
    browser_context.set_default_timeout(WAIT_MS)
    violations: list[str] = []
    browser_context.expose_binding("__cspViolation", lambda _source, text: violations.append(text))
    browser_context.add_init_script(CSP_REPORT)
    publisher = browser_context.new_page()
    slug = start_publishing_in_page(publisher, server, "WebRTC show", "whip", WAIT_MS)
    root = publisher.locator("#publisher")
    # The status line follows the stream: loaded idle, live now (no reload).
    expect(publisher.get_by_test_id("stream-status")).to_have_text("Live", timeout=WAIT_MS)
    expect(root).to_have_attribute("data-status", "live")
    # The WebRTC rows of the upload health, not the chunk rows.
    health = publisher.get_by_test_id("pub-upload-health")
    expect(health).to_have_attribute("data-ingest", "webrtc")
    expect(publisher.get_by_test_id("pub-connection")).to_have_text("connected")
    expect(publisher.get_by_test_id("pub-frames")).to_contain_text("640\u00d7480", timeout=WAIT_MS)
    expect(publisher.get_by_test_id("pub-sent")).to_be_hidden()
    expect(publisher.get_by_test_id("chunk-options")).to_be_hidden()
    assert publisher.get_by_test_id("pub-error").inner_text() == "—"

    first, first_console = open_webrtc_viewer(browser_context, server, slug)
    expect(first.get_by_test_id("live-indicator")).to_contain_text("LIVE", timeout=WAIT_MS)
    expect_frames_advancing(first)
    size = first.evaluate("(v => [v.videoWidth, v.videoHeight])(document.getElementById('video'))")
    assert size == [640, 480], size
    assert received_video_codec(first).lower() == "video/h264"
    expect(first.get_by_test_id("player-state")).to_contain_text("WebRTC", timeout=WAIT_MS)
    expect(first.get_by_test_id("connection")).to_have_text("connected")
    # The readout: a figure, said to be from the server's send, not from capture.
    expect(first.get_by_test_id("latency")).to_have_text(
        re.compile(r"^-?\d+\.\d\d s$"), timeout=WAIT_MS
    )
    assert (
        "capture, upload and server encode not counted"
        in first.get_by_test_id("latency-note").inner_text()
    )
    expect(first.get_by_test_id("play-webrtc")).to_have_attribute("aria-current", "true")

    # A viewer joining mid-stream gets a picture (the rendition's short GOP).
    first.wait_for_timeout(3000)
    second, second_console = open_webrtc_viewer(browser_context, server, slug)
    expect_frames_advancing(second)
    assert second.evaluate("document.getElementById('video').videoWidth") == 640
    # The first viewer kept playing meanwhile.
    expect_frames_advancing(first)

    publisher.get_by_test_id("stop").click()
    expect(root).to_have_attribute("data-pub-state", "ended", timeout=WAIT_MS)
    expect(publisher.get_by_test_id("stream-status")).to_have_text("Ended", timeout=WAIT_MS)
    for viewer in (first, second):
        expect(viewer.locator("#viewer")).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
        expect(viewer.get_by_test_id("player-state")).to_contain_text("the stream ended")
    for console in (first_console, second_console):
        errors = [line for line in console if line.startswith(("error", "pageerror"))]
        assert not errors, errors
    assert not violations, violations


def test_pages_get_their_icon_and_ask_for_nothing_missing(browser_context, live_server_proc):
    server = live_server_proc
    browser_context.set_default_timeout(WAIT_MS)
    icon = browser_context.request.get(f"{server.url}/favicon.ico")
    assert icon.ok and icon.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    assert icon.body()[:4] == b"\x00\x00\x01\x00"  # an ICO file's header

    problems: list[str] = []

    def watch(page, name):
        page.on(
            "response",
            lambda r: r.status >= 400 and problems.append(f"{name}: {r.status} {r.url}"),
        )
        page.on(
            "console",
            lambda m: (
                (m.type == "error" or "CMCD" in m.text)
                and problems.append(f"{name}: {m.type}: {m.text}")
            ),
        )
        page.on("pageerror", lambda err: problems.append(f"{name}: pageerror: {err}"))

    publisher = browser_context.new_page()
    watch(publisher, "publisher")
    slug = start_publishing_in_page(publisher, server, "Icon show", "ws", WAIT_MS)
    expect(publisher.get_by_test_id("stream-status")).to_have_text("Live", timeout=WAIT_MS)
    # Segments from the stream's status (the chunk acks say the same).
    expect(publisher.get_by_test_id("pub-segments")).to_have_text(
        re.compile(r"^[1-9]\d*$"), timeout=WAIT_MS
    )
    pages = {
        "hls": f"/streams/{slug}/hls/",
        "dash": f"/streams/{slug}/dash/",
        "dash-standard": f"/streams/{slug}/dash/?latency=standard",
        "stream": f"/streams/{slug}/",
        "lobby": "/",
    }
    opened = {}
    for name, path in pages.items():
        page = browser_context.new_page()
        watch(page, name)
        page.goto(server.url + path)
        icon_href = page.locator("link[rel=icon]").get_attribute("href")
        assert browser_context.request.get(server.url + icon_href).ok, icon_href
        opened[name] = page
    for name in ("hls", "dash", "dash-standard"):
        expect_frames_advancing(opened[name])
    # dash.js re-reads the MPD once per segment: a few refreshes (its CMCD reporter warned on
    # each, given a relative MPD URL).
    opened["dash"].wait_for_function("(window.rtcViewer.mpdRefreshes || 0) >= 3", timeout=WAIT_MS)
    assert not problems, problems
