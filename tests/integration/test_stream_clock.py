"""Latency anchoring on a real Daphne with the real FFmpeg: the timelines follow the
publisher's capture clock, not FFmpeg's start.

A test publisher sends a known capture clock (two minutes in the past, so it cannot be
confused with FFmpeg's own clock) with the first chunk, by HTTP POST and over the
WebSocket ingest. The served HLS media playlists must then carry
``#EXT-X-PROGRAM-DATE-TIME`` = capture clock + segment start, and the MPD's
``availabilityStartTime`` must be the capture clock, with a ``UTCTiming`` element
pointing at ``/streams/time/``.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import urllib.request
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest
import websockets

from streaming.clock import iso_ms, now_ms
from tests.support import ingest

pytestmark = pytest.mark.timeout(180)

SERVER_ENV = {
    "STREAM_LIVE_WINDOW_SECONDS": "4",
    "STREAM_RATE_LIMIT": "40",
    "STREAM_SEGMENT_SECONDS": "1",  # segment k starts at k-1 s
}
MPD_NS = {"mpd": "urn:mpeg:dash:schema:mpd:2011"}
PAST_MS = 120_000  # the known capture clock: two minutes before now


@pytest.fixture(scope="module")
def chunks(request, tmp_path_factory):
    return ingest.clip_chunks(request, tmp_path_factory, seconds=4)


@pytest.fixture(scope="module")
def server():
    from tests.support.daphne import DaphneServer

    srv = DaphneServer(env=SERVER_ENV).start()
    yield srv
    srv.stop()


def fetch(server, path: str) -> tuple[str, dict]:
    with urllib.request.urlopen(server.url + path, timeout=30) as response:
        return response.read().decode(), dict(response.headers)


def parse_ms(value: str) -> int:
    value = value.strip().replace("Z", "+00:00")
    if value[-5] in "+-" and value[-3] != ":":  # +0000 → +00:00
        value = value[:-2] + ":" + value[-2:]
    return round(datetime.fromisoformat(value).timestamp() * 1000)


def program_date_times(playlist: str) -> list[tuple[int, str]]:
    """(PROGRAM-DATE-TIME in ms, segment URI) for every segment of a media playlist."""
    out, pending = [], None
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pending = parse_ms(line.split(":", 1)[1])
        elif line and not line.startswith("#"):
            assert pending is not None, f"segment {line} has no PROGRAM-DATE-TIME"
            out.append((pending, line))
            pending = None
    return out


def wait_for_segments(server, slug: str, count: int) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            text, _ = fetch(server, f"/media/streams/{slug}/media_0.m3u8")
        except OSError:
            text = ""
        if text.count("#EXTINF") >= count:
            return text
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} segments after 60 s")


def check_anchored(server, slug: str, capture_ms: int, *, live: bool) -> None:
    text = wait_for_segments(server, slug, 2)
    assert ("#EXT-X-ENDLIST" in text) is not live
    for rep in (0, 1, 2):  # both video rungs and the audio track
        text, _ = fetch(server, f"/media/streams/{slug}/media_{rep}.m3u8")
        dates = program_date_times(text)
        assert dates, text
        # Segment k starts (k-1) s into the media: k-1 s after the capture clock.
        for when, uri in dates:
            number = int(uri.rsplit("-", 1)[1].split(".")[0])
            offset = when - capture_ms
            assert abs(offset - (number - 1) * 1000) <= 60, (uri, offset, text)
    mpd_text, _ = fetch(server, f"/media/streams/{slug}/manifest.mpd")
    root = ET.fromstring(mpd_text)
    assert root.get("type") == ("dynamic" if live else "static")
    if live:  # a static (VOD) MPD has no live edge: FFmpeg leaves the attribute out
        assert parse_ms(root.get("availabilityStartTime")) == capture_ms, root.attrib
        timing = root.find("mpd:UTCTiming", MPD_NS)
        assert timing is not None and timing.get("value").endswith("/streams/time/"), mpd_text


def http_publish_with_clock(server, chunks, slug: str, key: str) -> int:
    """Every chunk by HTTP, the first with a capture clock two minutes back; returns it."""
    capture_ms = now_ms() - PAST_MS
    status, body = ingest.post_chunk(
        server, slug, key, 0, chunks[0].data, capture_ms=str(capture_ms)
    )
    assert status == 202, body
    for seq, chunk in enumerate(chunks[1:], start=1):
        assert ingest.post_chunk(server, slug, key, seq, chunk.data)[0] == 202
    return capture_ms


def test_http_capture_clock_anchors_playlists_and_manifest(server, chunks):
    slug, key = ingest.new_stream(server, "Clock http")
    capture_ms = http_publish_with_clock(server, chunks, slug, key)
    check_anchored(server, slug, capture_ms, live=True)
    clock = ingest.stream_status(server, slug)["clock"]
    assert clock == {
        "capture_ms": capture_ms,
        "capture_time": iso_ms(capture_ms),
        "source": "publisher",
    }
    assert ingest.stop_http(server, slug, key)[1]["state"] == "ended"
    check_anchored(server, slug, capture_ms, live=False)  # the VOD keeps the anchor


def test_without_a_capture_clock_the_server_receipt_anchors(server, chunks):
    slug, key = ingest.new_stream(server, "Clock none")
    before = now_ms()
    for seq, chunk in enumerate(chunks):
        assert ingest.post_chunk(server, slug, key, seq, chunk.data)[0] == 202
    clock = ingest.stream_status(server, slug)["clock"]
    assert clock["source"] == "server" and clock["capture_ms"] >= before
    check_anchored(server, slug, clock["capture_ms"], live=True)
    assert ingest.stop_http(server, slug, key)[0] == 200


def test_an_implausible_capture_clock_is_refused_clearly(server, chunks):
    slug, key = ingest.new_stream(server, "Clock bad")
    year_ago = str(now_ms() - 365 * 86400 * 1000)
    status, body = ingest.post_chunk(server, slug, key, 0, chunks[0].data, capture_ms=year_ago)
    assert status == 400 and body["error"] == "invalid", body
    assert "/streams/time/" in body["message"]
    status, body = ingest.post_chunk(server, slug, key, 0, chunks[0].data, capture_ms="soon")
    assert status == 400 and "integer" in body["message"]
    assert ingest.stream_status(server, slug)["status"] == "idle"  # nothing started


async def ws_publish_with_clock(
    server, chunks, slug: str, key: str, capture_ms: int, bad_clocks=("yesterday",)
) -> None:
    """Publish over the socket; each of ``bad_clocks`` is sent first and must be refused
    with ``bad-clock``, leaving the socket and the stream as they were."""
    url = f"{server.ws_url}/ws/streams/{slug}/ingest/?token={ingest.page_token(server)}&v=1"
    async with websockets.connect(url, origin=server.url, max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "publish", "key": key}))
        assert (await ingest.ws_recv(ws))["type"] == "ready"
        for bad in bad_clocks:
            await ws.send(json.dumps({"type": "clock", "capture_ms": bad}))
            reply = await ingest.ws_recv(ws)
            if isinstance(bad, float) and bad != bad:  # json.dumps writes a bare NaN: not JSON
                assert reply["type"] == "error" and reply["code"] == "bad-message", reply
                continue
            assert reply["type"] == "error" and reply["code"] == "bad-clock", (bad, reply)
            assert "capture_ms" in reply["message"], reply
        await ws.send(json.dumps({"type": "clock", "capture_ms": capture_ms}))
        assert (await ingest.ws_recv(ws)) == {"type": "clock", "capture_ms": capture_ms}
        for seq, chunk in enumerate(chunks):
            await ws.send(struct.pack(">I", seq) + chunk.data)
            reply = await ingest.ws_recv(ws)
            assert reply["type"] == "ack", reply
        await asyncio.to_thread(check_anchored, server, slug, capture_ms, live=True)
        await ws.send(json.dumps({"type": "stop"}))
        assert (await ingest.ws_recv(ws))["state"] == "ended"


def test_websocket_capture_clock_anchors_playlists_and_manifest(server, chunks):
    slug, key = ingest.new_stream(server, "Clock ws")
    capture_ms = now_ms() - PAST_MS
    asyncio.run(ws_publish_with_clock(server, chunks, slug, key, capture_ms))
    check_anchored(server, slug, capture_ms, live=False)


# Capture clocks that are not clocks: Unicode digits ("²".isdigit() is true, int("²")
# raises: that was a 500 and a socket closed with 1011), signs, spaces, exponents, floats,
# NaN, booleans and integers too big for a float.
WIDE_123 = "\uff11\uff12\uff13"
BAD_CLOCK_TEXT = ["²", "١٢٣", WIDE_123, " 12", "-1", "1e3", "12.5", "NaN", "9" * 40, "9" * 5000]
BAD_CLOCK_JSON = [*BAD_CLOCK_TEXT, 1.5e12, float("nan"), True, 10**400, -(10**30), None, [1]]


def log_size(server) -> int:
    return server.log_path.stat().st_size


def new_log(server, since: int) -> str:
    return server.log_path.read_bytes()[since:].decode(errors="replace")


def test_http_bad_capture_clocks_are_400_and_the_stream_carries_on(server, chunks):
    slug, key = ingest.new_stream(server, "Clock junk http")
    since = log_size(server)
    for bad in BAD_CLOCK_TEXT:
        status, body = ingest.post_chunk(server, slug, key, 0, chunks[0].data, capture_ms=bad)
        assert status == 400 and body["error"] == "invalid", (bad, status, body)
        assert "capture_ms" in body["message"], body
    assert ingest.stream_status(server, slug)["status"] == "idle"  # nothing started
    # The same stream then takes a good clock and its chunks.
    capture_ms = http_publish_with_clock(server, chunks, slug, key)
    assert ingest.stop_http(server, slug, key)[1]["state"] == "ended"
    assert ingest.stream_status(server, slug)["clock"]["capture_ms"] == capture_ms
    assert "Traceback" not in new_log(server, since)


def test_websocket_bad_capture_clocks_are_errors_and_the_socket_stays(server, chunks):
    slug, key = ingest.new_stream(server, "Clock junk ws")
    since = log_size(server)
    capture_ms = now_ms() - PAST_MS
    asyncio.run(ws_publish_with_clock(server, chunks, slug, key, capture_ms, BAD_CLOCK_JSON))
    assert ingest.stream_status(server, slug)["clock"]["capture_ms"] == capture_ms
    assert "Traceback" not in new_log(server, since)


def test_time_endpoint_serves_the_server_clock(server):
    before = now_ms()
    text, headers = fetch(server, "/streams/time/")
    after = now_ms()
    assert text.endswith("Z") and before <= parse_ms(text) <= after, text
    assert headers["Cache-Control"] == "no-store"
