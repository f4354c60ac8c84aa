"""Publishing a live stream to a real Daphne with the real FFmpeg, by HTTP POST and WebSocket.

The clip is a generated WebM (VP8 + Opus, ``tests/support/media.py``) cut into
MediaRecorder-like 250 ms chunks and uploaded at about 2x real time. Outputs are read from
the server's MEDIA_ROOT and over HTTP from ``/media/streams/...``.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import urllib.error
import urllib.parse
import urllib.request

import m3u8
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from rtcsite.ws.codes import CloseCode
from tests.support.ingest import (
    clip_chunks,
    media_dir,
    new_stream,
    page_token,
    post_chunk,
    stop_http,
    stream_status,
    ws_recv,
)

pytestmark = pytest.mark.timeout(180)

CLIP_SECONDS = 4
SPEED = 2.0
MAX_CHUNK = 256 * 1024
SERVER_ENV = {
    "STREAM_MAX_CHUNK_BYTES": str(MAX_CHUNK),
    "STREAM_LIVE_WINDOW_SECONDS": "4",
    "STREAM_IDLE_TIMEOUT": "30",
    "STREAM_RATE_LIMIT": "40",
}


# --- fixtures and helpers ----------------------------------------------------------------
@pytest.fixture(scope="module")
def chunks(request, tmp_path_factory):
    return clip_chunks(request, tmp_path_factory, seconds=CLIP_SECONDS)


@pytest.fixture(scope="module")
def server():
    from tests.support.daphne import DaphneServer

    srv = DaphneServer(env=SERVER_ENV).start()
    yield srv
    srv.stop()


def check_ended_outputs(server, slug: str, *, low_latency: bool = True) -> None:
    out = media_dir(server, slug)
    # The stream's mode reached the encoder: the origin's mode file is there or not.
    assert (out / "low-latency.json").exists() is low_latency
    master = m3u8.load(str(out / "master.m3u8"))
    assert [p.stream_info.resolution for p in master.playlists] == [(640, 480), (480, 360)]
    for rep in (0, 1, 2):
        text = (out / f"media_{rep}.m3u8").read_text()
        assert text.rstrip().endswith("#EXT-X-ENDLIST"), text[-200:]
        playlist = m3u8.loads(text)
        assert abs(sum(s.duration for s in playlist.segments) - CLIP_SECONDS) < 0.5
    assert 'type="static"' in (out / "manifest.mpd").read_text()
    # The same playlist over HTTP, as a player gets it.
    with urllib.request.urlopen(f"{server.url}/media/streams/{slug}/media_0.m3u8") as response:
        assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
        assert response.read().decode().rstrip().endswith("#EXT-X-ENDLIST")
    status = stream_status(server, slug)
    assert status["status"] == "ended", status
    assert status["renditions"] == ["480p", "360p"]
    assert status["segments"] >= CLIP_SECONDS


# --- HTTP POST ingest --------------------------------------------------------------------
def test_http_publish_garbage_oversize_wrong_key_then_stop(server, chunks):
    slug, key = new_stream(server)
    out = media_dir(server, slug)

    status, body = post_chunk(server, slug, "sk_not-the-key", 0, chunks[0].data)
    assert status == 403 and body["error"] == "bad-key"
    status, body = post_chunk(server, slug, "", 0, chunks[0].data)
    assert status == 401 and body["error"] == "key-missing"
    assert not out.exists()

    start = time.monotonic()
    saw_live_playlist = False
    for seq, chunk in enumerate(chunks):
        due = start + chunk.end_ms / 1000 / SPEED
        time.sleep(max(0.0, due - time.monotonic()))
        if seq == 6:
            status, body = post_chunk(server, slug, key, 6, b"<html>not a video</html>" * 50)
            assert status == 400 and body["error"] == "invalid", body
            assert "seq=6 refused" in body["message"] and "WebM" in body["message"]
        if seq == 8:
            status, body = post_chunk(server, slug, key, 8, bytes(MAX_CHUNK + 1))
            assert status == 413 and body["error"] == "too-large", body
        status, body = post_chunk(server, slug, key, seq, chunk.data)
        assert status == 202, body
        assert body["status"] == "accepted" and body["seq"] == seq
        if seq == 0:
            assert body["state"] == "live"
    # While live (FFmpeg may still be catching up): a live playlist, no end tag yet.
    deadline = time.monotonic() + 15
    while not saw_live_playlist and time.monotonic() < deadline:
        if (out / "media_0.m3u8").exists():
            text = (out / "media_0.m3u8").read_text()
            saw_live_playlist = "#EXTINF" in text and "#EXT-X-ENDLIST" not in text
        time.sleep(0.05)
    # a duplicate is answered 200 "duplicate" and ignored
    status, body = post_chunk(server, slug, key, 3, chunks[3].data)
    assert status == 200 and body["status"] == "duplicate"
    assert saw_live_playlist, "no live playlist while publishing"
    assert stream_status(server, slug)["status"] == "live"

    status, body = stop_http(server, slug, "sk_wrong")
    assert status == 403
    status, body = stop_http(server, slug, key)
    assert status == 200 and body["state"] == "ended", body
    check_ended_outputs(server, slug)

    # An ended stream takes no more chunks.
    status, body = post_chunk(server, slug, key, len(chunks), chunks[-1].data)
    assert status == 409 and body["error"] == "closed"


def test_http_idle_timeout_ends_an_abandoned_stream(daphne_factory, chunks):
    srv = daphne_factory({**SERVER_ENV, "STREAM_IDLE_TIMEOUT": "2"})
    slug, key = new_stream(srv)
    for seq, chunk in enumerate(chunks[:8]):
        assert post_chunk(srv, slug, key, seq, chunk.data)[0] == 202
    deadline = time.monotonic() + 20
    while stream_status(srv, slug)["status"] != "ended":
        assert time.monotonic() < deadline, stream_status(srv, slug)
        time.sleep(0.2)
    assert stream_status(srv, slug)["reason"].startswith("idle")
    text = (media_dir(srv, slug) / "media_0.m3u8").read_text()
    assert text.rstrip().endswith("#EXT-X-ENDLIST")


# --- WebSocket ingest --------------------------------------------------------------------
async def ws_publish(server, chunks, slug: str, key: str) -> list[dict]:
    token = page_token(server)
    url = f"{server.ws_url}/ws/streams/{slug}/ingest/?token={token}&v=1"
    replies = []
    async with websockets.connect(url, origin=server.url, max_size=2**22) as ws:
        await ws.send(b"\x00\x00\x00\x00early")  # before publish: refused, socket stays
        reply = await ws_recv(ws)
        assert reply["type"] == "error" and reply["code"] == "not-publishing"
        await ws.send(json.dumps({"type": "publish", "key": key}))
        ready = await ws_recv(ws)
        assert ready["type"] == "ready" and ready["max_chunk_bytes"] == MAX_CHUNK
        start = time.monotonic()
        for seq, chunk in enumerate(chunks):
            due = start + chunk.end_ms / 1000 / SPEED
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if seq == 5:
                await ws.send(struct.pack(">I", 5) + b"\x1a\x45garbage" * 100)
                reply = await ws_recv(ws)
                assert reply["type"] == "error" and reply["code"] == "invalid", reply
                assert reply["seq"] == 5 and "refused" in reply["message"]
            if seq == 7:
                await ws.send(struct.pack(">I", 7) + bytes(MAX_CHUNK + 1))
                reply = await ws_recv(ws)
                assert reply["code"] == "too-large" and reply["seq"] == 7, reply
            await ws.send(struct.pack(">I", seq) + chunk.data)
            reply = await ws_recv(ws)
            assert reply["type"] == "ack" and reply["status"] == "accepted", reply
            replies.append(reply)
        await ws.send(json.dumps({"type": "stop"}))
        stopped = await ws_recv(ws)
        assert stopped["type"] == "stopped" and stopped["state"] == "ended", stopped
    return replies


def test_websocket_publish_with_garbage_and_oversized_chunks(server, chunks):
    # A standard-mode stream (the HTTP test above publishes the default, low latency).
    slug, key = new_stream(server, "WS show", low_latency=False)
    assert stream_status(server, slug)["low_latency"] is False
    replies = asyncio.run(ws_publish(server, chunks, slug, key))
    assert [r["seq"] for r in replies] == list(range(len(chunks)))
    assert replies[-1]["segments"] >= 1
    check_ended_outputs(server, slug, low_latency=False)


async def ws_wrong_key(server, slug: str) -> tuple[dict, int]:
    token = page_token(server)
    url = f"{server.ws_url}/ws/streams/{slug}/ingest/?token={token}&v=1"
    async with websockets.connect(url, origin=server.url) as ws:
        await ws.send(json.dumps({"type": "publish", "key": "sk_wrong"}))
        reply = await ws_recv(ws)
        with pytest.raises(ConnectionClosed):
            await ws_recv(ws)
        return reply, ws.close_code


def test_websocket_wrong_key_is_refused_and_closed(server):
    slug, _key = new_stream(server, "WS locked")
    reply, code = asyncio.run(ws_wrong_key(server, slug))
    assert reply["code"] == "bad-key"
    assert code == CloseCode.FORBIDDEN
    reply, code = asyncio.run(ws_wrong_key(server, "no-such-stream"))
    assert reply["code"] == "not-found" and code == CloseCode.NOT_FOUND
    assert stream_status(server, slug)["status"] == "idle"


# --- security and lifecycle edges --------------------------------------------------------
def rotate_key(server, slug: str) -> str:
    out = server.manage(
        "shell",
        "-c",
        "from streaming.models import Stream; from streaming.services import rotate_publish_key; "
        f"print(rotate_publish_key(Stream.objects.get(slug={slug!r})))",
    )
    return out.split()[-1]


def test_garbage_first_chunk_then_key_rotation_mid_stream(server, chunks):
    slug, key = new_stream(server, "Rotated")
    status, body = post_chunk(server, slug, key, 0, b"GIF89a" + bytes(500))
    assert status == 400 and "not a WebM stream" in body["message"], body
    assert stream_status(server, slug)["status"] == "idle"
    for seq in range(4):
        assert post_chunk(server, slug, key, seq, chunks[seq].data)[0] == 202
    new_key = rotate_key(server, slug)
    status, body = post_chunk(server, slug, key, 4, chunks[4].data)
    assert status == 403 and body["error"] == "bad-key"  # the old key stops working at once
    assert post_chunk(server, slug, new_key, 4, chunks[4].data)[0] == 202
    assert stop_http(server, slug, key)[0] == 403
    status, body = stop_http(server, slug, new_key)
    assert status == 200 and body["state"] == "ended"


def test_stop_before_going_live(server):
    slug, key = new_stream(server, "Never live")
    status, body = stop_http(server, slug, key)
    assert status == 200 and body["state"] == "ended"
    status, body = post_chunk(server, slug, key, 0, b"\x1a\x45\xdf\xa3")
    assert status == 409 and body["error"] == "closed"


def test_ingest_on_another_process_is_refused_not_duplicated(daphne_factory, chunks):
    first = daphne_factory(SERVER_ENV)
    shared = {
        **SERVER_ENV,
        "SQLITE_PATH": str(first.workdir / "db.sqlite3"),
        "MEDIA_ROOT": str(first.workdir / "media"),
    }
    second = daphne_factory(shared, migrate=False)
    slug, key = new_stream(first, "Sticky")
    for seq in range(3):
        assert post_chunk(first, slug, key, seq, chunks[seq].data)[0] == 202
    time.sleep(PROGRESS_WAIT)
    status, body = post_chunk(second, slug, key, 3, chunks[3].data)
    assert status == 409 and body["error"] == "wrong-process", body
    assert "same process" in body["message"]
    assert post_chunk(first, slug, key, 3, chunks[3].data)[0] == 202
    assert stop_http(first, slug, key)[1]["state"] == "ended"


PROGRESS_WAIT = 0.5  # the live status (and worker) is written when the pipeline goes live
