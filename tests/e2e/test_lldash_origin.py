"""dash.js 5 (the site's own copy) on the origin's LL-DASH MPD (streaming/lldash.py), the
segments followed as FFmpeg writes them (streaming/growing.py): its low-latency mode turns
on, frames advance at the live edge, and its clock comes from this site only.

A bare page (no viewer page: that, and its catch-up settings, are the players' tests), so
what is checked is what the MPD and the origin give dash.js by themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daphne import DaphneServer
from tests.support.ll_stream import ll_encoder
from tests.support.process import ROOT

DASH_JS = ROOT / "node_modules" / "dashjs" / "dist" / "modern" / "umd" / "dash.all.min.js"


@pytest.fixture(scope="module")
def server():
    server = DaphneServer(env={"STREAM_LL_HELD_PER_CLIENT": "0"}).start()
    yield server
    server.stop()


def test_dash_js_plays_the_low_latency_mpd_in_its_low_latency_mode(server, page):
    folder = Path(server.full_env()["MEDIA_ROOT"]) / "streams" / "live"
    with ll_encoder(folder) as encoder:
        encoder.wait_for_segments(2)
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(f"{server.url}/streams/time/")  # any page of the origin
        page.set_content("<video id=v muted autoplay playsinline></video>")
        page.add_script_tag(path=str(DASH_JS))
        page.evaluate(
            """url => {
                window.player = dashjs.MediaPlayer().create();
                player.initialize(document.getElementById('v'), url, true);
            }""",
            f"{server.url}/media/streams/live/manifest.mpd",
        )
        page.wait_for_function("document.getElementById('v').currentTime > 1", timeout=30_000)
        start = page.evaluate("document.getElementById('v').currentTime")
        page.wait_for_function(
            f"document.getElementById('v').currentTime > {start} + 2", timeout=30_000
        )
        state = page.evaluate(
            """() => ({low: player.getLowLatencyModeEnabled(), target: player.getTargetLiveDelay(),
                       latency: player.getCurrentLiveLatency()})"""
        )
        print(f"\n[lldash] dash.js: {state}")
        assert state["low"] is True  # availabilityTimeComplete="false" did it
        assert state["target"] == pytest.approx(0.8)  # ServiceDescription Latency@target
        page.evaluate("player.reset()")
    hosts = {url.split("/")[2] for url in requested}
    assert hosts == {f"127.0.0.1:{server.port}"}, hosts  # no internet time server
    assert any(url.endswith("/streams/time/") for url in requested[1:])  # UTCTiming used
    followed = [url for url in requested if "chunk-stream0-" in url]
    assert len(followed) >= 3, followed
