"""WHEP playback (draft-ietf-wish-whep) against a real Daphne: a stream published by chunk
ingest (real FFmpeg encoding the ladder and the WebRTC rendition), Python aiortc viewers
POSTing their offers over HTTP and decoding what the server's packet-only senders send;
a viewer joining mid-stream, the process's viewer cap, unusable offers, DELETE, and the
end of the stream.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import websockets
from aiortc import (
    RTCSessionDescription,
)

from tests.support.ingest import (
    clip_chunks,
    new_stream,
    page_token,
    post_chunk,
    stop_http,
    stream_status,
)
from tests.support.whep import WhepReceiver
from tests.support.whip import request, resource

pytestmark = pytest.mark.timeout(240)

SECONDS = 14
SERVER_ENV = {
    "SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES": "1",  # the aiortc viewers' LAN host candidates
    "STREAM_WHEP_MAX_VIEWERS": "2",
    "STREAM_LOW_LATENCY_DEFAULT": "0",
}


class HttpViewer(WhepReceiver):
    """An aiortc WHEP client over HTTP: the full offer in one POST (no trickle)."""

    def __init__(self, server, slug: str, *, video_codec: str | None = None) -> None:
        super().__init__(video_codec=video_codec)
        self.server, self.slug = server, slug
        self.location: str | None = None

    async def post(self, query: str = ""):
        reply = await asyncio.to_thread(
            request,
            "POST",
            f"{self.server.url}/streams/{self.slug}/whep/{query}",
            body=await self.offer(),
            headers={"Content-Type": "application/sdp"},
        )
        if reply.status == 201:
            self.location = resource(self.server, reply.headers["Location"])
            await self.pc.setRemoteDescription(RTCSessionDescription(reply.body, "answer"))
        return reply

    async def delete(self):
        return await asyncio.to_thread(request, "DELETE", self.location)


def publish(server, slug: str, key: str, chunks, stop: threading.Event) -> None:
    """Chunk ingest at the clip's own pace, as a MediaRecorder page posts it."""
    start = time.monotonic()
    for seq, chunk in enumerate(chunks):
        if stop.is_set():
            return
        time.sleep(max(0.0, start + chunk.end_ms / 1000 - 0.25 - time.monotonic()))
        status, body = post_chunk(server, slug, key, seq, chunk.data)
        assert status in (200, 202), body


async def watch_socket(server, slug: str):
    """A viewer page's socket (it counts as one viewer)."""
    url = f"{server.ws_url}/ws/streams/{slug}/watch/?token={page_token(server)}"
    return await websockets.connect(url, origin=server.url)


def assert_refused(reply, status: int, *words: str) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["Content-Type"].startswith("text/plain"), reply.headers
    for word in words:
        assert word.lower() in reply.body.lower(), reply.body


@pytest.fixture
def chunks(request, tmp_path_factory):
    return clip_chunks(request, tmp_path_factory, SECONDS)


async def watch_live_stream(server, chunks) -> None:
    slug, key = new_stream(server, "WHEP show")
    early = HttpViewer(server, slug)
    assert_refused(await early.post(), 409, "not live")  # nothing published yet
    await early.close()

    stop = threading.Event()
    publisher = threading.Thread(target=publish, args=(server, slug, key, chunks, stop))
    publisher.start()
    first, second, third = (HttpViewer(server, slug) for _ in range(3))
    vp8_only = HttpViewer(server, slug, video_codec="vp8")
    try:
        deadline = time.monotonic() + 60
        while stream_status(server, slug)["status"] != "live":
            assert time.monotonic() < deadline, stream_status(server, slug)
            await asyncio.sleep(0.2)

        reply = await first.post()
        assert reply.status == 201, reply.body
        assert reply.headers["Content-Type"] == "application/sdp"
        assert "H264/90000" in reply.body and "VP8" not in reply.body
        await asyncio.wait_for(first.got_video.wait(), 60)

        # Viewer counts include WHEP viewers: a viewer page's socket sees itself + the first.
        page = await watch_socket(server, slug)
        welcome = json.loads(await asyncio.wait_for(page.recv(), 15))
        assert welcome["viewers"] == 2, welcome

        # A second viewer, mid-stream, from that page (?peer=: its socket counts it): a
        # picture of its own (from the next keyframe), and no second place for the page.
        reply = await second.post(f"?peer={welcome['you']['peer']}")
        assert reply.status == 201, reply.body
        await asyncio.wait_for(second.got_video.wait(), 60)
        other_page = await watch_socket(server, slug)
        assert json.loads(await asyncio.wait_for(other_page.recv(), 15))["viewers"] == 3
        await other_page.close()
        await page.close()

        # The process's cap (2 here): 503 with Retry-After and a clear body.
        over = await third.post()
        assert_refused(over, 503, "at most 2")
        assert int(over.headers["Retry-After"]) >= 1
        # An offer without H.264: the packets are H.264, nothing else can be sent.
        await vp8_only.close()
        vp8_only = HttpViewer(server, slug, video_codec="vp8")
        first_left = await first.delete()  # make room so the codec check is what refuses
        assert first_left.status == 200, first_left.body
        assert_refused(await vp8_only.post(), 422, "H264")
        assert_refused(await asyncio.to_thread(request, "DELETE", first.location), 404)

        frames_before = len(second.sizes)
        await asyncio.to_thread(publisher.join)
        assert stop_http(server, slug, key)[0] == 200
        # The stream ended: the viewer's tracks end, its session is gone.
        deadline = time.monotonic() + 60
        while second.ended != {"video", "audio"}:
            assert time.monotonic() < deadline, second.ended
            await asyncio.sleep(0.2)
        assert_refused(await asyncio.to_thread(request, "DELETE", second.location), 404)
        assert len(second.sizes) > frames_before
        assert_refused(await HttpViewer(server, slug).post(), 409, "not live")
    finally:
        stop.set()
        for viewer in (first, second, third, vp8_only):
            await viewer.close()
        await asyncio.to_thread(publisher.join)

    # The stream is 640x480: its top rung is 480p, and so is the WebRTC rendition.
    for viewer in (first, second):
        assert set(viewer.sizes) == {(640, 480)}, set(viewer.sizes)
        assert viewer.audio_frames > 0


def test_whep_viewers_watch_a_live_stream_over_http(daphne_factory, chunks):
    server = daphne_factory(env=SERVER_ENV)
    asyncio.run(watch_live_stream(server, chunks))
