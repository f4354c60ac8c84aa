"""A stream whose FFmpeg was killed mid-way, watched in real Chromium with hls.js and dash.js.

The stream's encoder is killed (SIGKILL, found as the Daphne process's child) while a
generated clip is published at 1x real time; the restarted encoder writes ``run1/`` and
the playlists go on with a discontinuity (HLS) and a second Period (DASH,
streaming/runs.py). Both players play it live after the restart, and the ended stream as
a VOD across the boundary: started from the beginning, then sought into the second run.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.test_stream_viewers import WAIT_MS, expect_playing
from tests.support.ingest import clip_chunks, media_dir, new_stream, post_chunk, stop_http

pytestmark = pytest.mark.timeout(600)

PLAYERS = ("hls", "dash")


def ffmpeg_child(server, slug: str) -> int | None:
    """The pid of the FFmpeg the server runs for ``slug`` (its child writing that folder)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server.pid and f"streams/{slug}/".encode() in cmdline:
            return int(pid)
    return None


def test_restarted_stream_plays_live_and_as_vod_in_hls_js_and_dash_js(
    browser_context, live_server_proc, request, tmp_path_factory
):
    server = live_server_proc
    browser_context.set_default_timeout(WAIT_MS)
    chunks = clip_chunks(request, tmp_path_factory, seconds=24)
    slug, key = new_stream(server, "Restarted")
    out = media_dir(server, slug)
    errors: list[str] = []

    def publish() -> None:
        started = time.monotonic()
        for seq, chunk in enumerate(chunks):
            time.sleep(max(0.0, started + chunk.end_ms / 1000 - time.monotonic()))
            status, body = post_chunk(server, slug, key, seq, chunk.data)
            if status not in (200, 202):
                errors.append(f"seq {seq}: {status} {body}")
                return

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    deadline = time.monotonic() + 60
    while len(list(out.glob("chunk-stream0-*.m4s"))) < 4:
        assert time.monotonic() < deadline and not errors, errors
        time.sleep(0.05)
    pid = ffmpeg_child(server, slug)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while "run1/" not in (out / "media_0.m3u8").read_text():
        assert time.monotonic() < deadline + 30 and not errors, errors
        time.sleep(0.05)

    viewers = {}
    for player in PLAYERS:  # live, after the restart
        viewer = browser_context.new_page()
        viewer.goto(f"{server.url}/streams/{slug}/{player}/")
        viewers[player] = viewer
    for viewer in viewers.values():
        expect_playing(viewer)
    publisher.join(timeout=120)
    assert not errors, errors
    assert stop_http(server, slug, key)[1]["state"] == "ended"
    for viewer in viewers.values():
        viewer.close()

    for player in PLAYERS:  # the VOD, across the boundary
        vod = browser_context.new_page()
        vod.goto(f"{server.url}/streams/{slug}/{player}/")
        expect_playing(vod)
        duration = vod.evaluate("document.getElementById('video').duration")
        assert duration > 15, (player, duration)
        vod.evaluate(f"document.getElementById('video').currentTime = {duration - 4}")
        vod.wait_for_function(
            f"document.getElementById('video').currentTime > {duration - 3}", timeout=WAIT_MS
        )
        vod.close()
