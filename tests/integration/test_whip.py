"""WHIP ingest (RFC 9725) against a real Daphne, the real pipeline and FFmpeg encoder, with
clients nobody here wrote (FFmpeg's ``-f whip`` muxer) and a Python aiortc publisher that
trickles, plus every bad input with its status code while other streams carry on.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import av
import imageio_ffmpeg
import m3u8
import pytest
from mpegdash.parser import MPEGDASHParser

from streaming.sessions import CONNECT_TIMEOUT
from tests.support.ingest import media_dir, new_stream, stream_status, wait_status
from tests.support.whip import (
    WhipPublisher,
    ffmpeg_whip,
    post_offer,
    request,
    some_offer,
)

pytestmark = pytest.mark.timeout(240)

FFMPEG_SECONDS = 6
SERVER_ENV = {
    "SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES": "1",  # the aiortc client's LAN host candidates
    "STREAM_LIVE_WINDOW_SECONDS": "4",
    "STREAM_IDLE_TIMEOUT": "30",
    "STREAM_WHIP_IDLE_TIMEOUT": "30",
}


@pytest.fixture(scope="module")
def server():
    from tests.support.daphne import DaphneServer

    srv = DaphneServer(env=SERVER_ENV).start()
    yield srv
    srv.stop()


def reap(process) -> None:
    """A publisher FFmpeg a failed test left running: killed and waited for."""
    if process.poll() is None:
        process.kill()
        process.wait()


def wait_segments(server, slug: str, more_than: int, within: float = 60.0) -> int:
    deadline = time.monotonic() + within
    while (segments := stream_status(server, slug)["segments"] or 0) <= more_than:
        assert time.monotonic() < deadline, stream_status(server, slug)
        time.sleep(0.2)
    return segments


def check_segments(out: Path, rep: int, size: tuple[int, int]) -> int:
    """Every video segment of ``rep`` decodes on its own (with init), keyframe first."""
    init = (out / f"init-stream{rep}.m4s").read_bytes()
    segments = sorted(out.glob(f"chunk-stream{rep}-*.m4s"))
    assert segments
    for path in segments:
        with av.open(io.BytesIO(init + path.read_bytes())) as container:
            packets = [p for p in container.demux(video=0) if p.size]
            assert packets[0].is_keyframe, f"{path.name} does not start with a keyframe"
        with av.open(io.BytesIO(init + path.read_bytes())) as container:
            frame = next(container.decode(video=0))
            assert (frame.width, frame.height) == size
    return len(segments)


def check_ended_outputs(server, slug: str, seconds: float) -> None:
    out = media_dir(server, slug)
    master = m3u8.load(str(out / "master.m3u8"))
    assert [p.stream_info.resolution for p in master.playlists] == [(640, 480), (480, 360)]
    assert all("mp4a.40.2" in p.stream_info.codecs for p in master.playlists)  # Opus in, AAC out
    for rep in (0, 1, 2):
        playlist = m3u8.load(str(out / f"media_{rep}.m3u8"))
        assert playlist.is_endlist, f"media_{rep}.m3u8 has no #EXT-X-ENDLIST"
        total = sum(s.duration for s in playlist.segments)
        # arrival-paced: load may stretch it, never shorten it much
        assert seconds - 1.5 < total < seconds + 4, (rep, total)
    mpd = MPEGDASHParser.parse(str(out / "manifest.mpd"))
    assert mpd.type == "static"
    video, audio = mpd.periods[0].adaptation_sets
    assert [(r.width, r.height) for r in video.representations] == [(640, 480), (480, 360)]
    assert len(audio.representations) == 1
    assert check_segments(out, 0, (640, 480)) == check_segments(out, 1, (480, 360))


def assert_refused(reply, status: int, *words: str) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["Content-Type"].startswith("text/plain"), reply.headers
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    for word in words:
        assert word.lower() in reply.body.lower(), reply.body


# --- FFmpeg's WHIP muxer -------------------------------------------------------------------
def test_ffmpeg_publishes_over_whip_to_hls_and_dash_and_its_delete_ends_the_stream(server):
    slug, key = new_stream(server, "FFmpeg WHIP", low_latency=False)
    url = f"{server.url}/streams/{slug}/whip/"
    ffmpeg = ffmpeg_whip(imageio_ffmpeg.get_ffmpeg_exe(), url, key, FFMPEG_SECONDS)
    try:
        wait_status(server, slug, "live")
        wait_segments(server, slug, 0)
        # A second publisher while the first is live: 409.
        second = post_offer(server, slug, key, asyncio.run(some_offer()))
        assert_refused(second, 409, "publish")
        output, _ = ffmpeg.communicate(timeout=FFMPEG_SECONDS + 60)
    finally:
        reap(ffmpeg)
    assert ffmpeg.returncode == 0, output
    # FFmpeg DELETEs its session when it ends: the stream ended as with stop. (FFmpeg 9.0.2
    # then logs "Failed to read response from DELETE" whatever the 200 says: seen here with
    # an empty immediate 200 from a bare socket server too.)
    status = wait_status(server, slug, "ended", within=30)
    assert status["reason"] == "stopped by the publisher", status
    assert status["renditions"] == ["480p", "360p"]
    check_ended_outputs(server, slug, FFMPEG_SECONDS)
    # An ended stream takes no new publication.
    assert_refused(post_offer(server, slug, key, asyncio.run(some_offer())), 409)


def test_ffmpeg_taking_the_dtls_client_role_itself_publishes_too(server):
    """``-whip_flags dtls_active``: the offer says ``a=setup:active``; the server takes the
    DTLS server role it leaves (by default FFmpeg offers ``passive``, test above)."""
    slug, key = new_stream(server, "FFmpeg WHIP active", low_latency=False)
    url = f"{server.url}/streams/{slug}/whip/"
    ffmpeg = ffmpeg_whip(imageio_ffmpeg.get_ffmpeg_exe(), url, key, 3, "-whip_flags", "dtls_active")
    try:
        wait_status(server, slug, "live")
        output, _ = ffmpeg.communicate(timeout=60)
    finally:
        reap(ffmpeg)
    assert ffmpeg.returncode == 0, output
    status = wait_status(server, slug, "ended", within=30)
    assert status["reason"] == "stopped by the publisher", status
    assert check_segments(media_dir(server, slug), 0, (640, 480)) >= 2


# --- a Python aiortc publisher, trickling ----------------------------------------------------
async def trickle_publish_then_delete(server) -> None:
    slug, key = new_stream(server, "aiortc WHIP", low_latency=False)
    other_slug, other_key = new_stream(server, "Someone else's")
    publisher = WhipPublisher(server, slug, key)
    try:
        reply = await publisher.publish()
        assert reply.status == 201, reply.body
        assert reply.headers["Content-Type"] == "application/sdp"
        assert reply.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
        assert reply.headers["ETag"].startswith('"')
        assert "Location" in reply.headers["Access-Control-Expose-Headers"]
        session_id = publisher.location.rstrip("/").split("/")[-1]
        assert len(session_id) >= 32

        # PATCH refusals, then the candidates.
        fragment = publisher.fragment()
        assert_refused(await publisher.patch(fragment, if_match=None), 428, "If-Match")
        assert_refused(await publisher.patch(fragment, if_match='"other"'), 412, "ETag")
        restart = fragment.replace("a=ice-ufrag:", "a=ice-ufrag:x")
        assert_refused(await publisher.patch(restart, if_match="*"), 422, "restart")
        assert_refused(await publisher.patch(restart), 422, "restart")
        assert_refused(await publisher.patch(fragment, content_type="application/sdp"), 415)
        assert_refused(await publisher.patch("<html>hello</html>\r\n"), 400)
        reply = await publisher.patch(fragment)
        assert reply.status == 204 and "ETag" not in reply.headers, reply

        await publisher.wait_connected()
        await asyncio.to_thread(wait_status, server, slug, "live")
        await asyncio.to_thread(wait_segments, server, slug, 1)

        # Someone else's resource: the same id under another stream, or another's key.
        elsewhere = f"{server.url}/streams/{other_slug}/whip/{session_id}/"
        headers = {"Authorization": f"Bearer {other_key}"}
        assert_refused(await asyncio.to_thread(request, "DELETE", elsewhere, headers=headers), 404)
        assert_refused(await publisher.delete(key=other_key), 403)
        whep = publisher.location.replace("/whip/", "/whep/")
        assert_refused(await asyncio.to_thread(request, "DELETE", whep), 404)
        assert stream_status(server, slug)["status"] == "live"

        reply = await publisher.delete()
        assert reply.status == 200, reply.body
        status = stream_status(server, slug)
        assert status["status"] == "ended" and status["reason"] == "stopped by the publisher"
        playlist = (media_dir(server, slug) / "media_0.m3u8").read_text()
        assert playlist.rstrip().endswith("#EXT-X-ENDLIST")
        assert_refused(await publisher.delete(), 404)
    finally:
        await publisher.close()


def test_aiortc_publisher_trickles_by_patch_and_deletes(server):
    asyncio.run(trickle_publish_then_delete(server))


async def never_connects_then_publishes(server) -> None:
    slug, key = new_stream(server, "Never connects")
    gone = WhipPublisher(server, slug, key)
    reply = await gone.publish()  # the offer without candidates, and no PATCH ever follows
    assert reply.status == 201, reply.body
    await gone.close()
    # The session is closed once ICE has not connected in time (sessions.CONNECT_TIMEOUT);
    # the stream never went live, so it stays idle and a new publisher may take it.
    second = WhipPublisher(server, slug, key)
    try:
        deadline = time.monotonic() + CONNECT_TIMEOUT + 30
        while (reply := await second.publish()).status == 409:
            assert "publisher" in reply.body, reply.body
            assert time.monotonic() < deadline, "the first session still holds the stream"
            await asyncio.sleep(1)
        assert reply.status == 201, reply.body
        assert stream_status(server, slug)["status"] == "idle"
        reply = await second.patch(second.fragment())
        assert reply.status == 204, reply.body
        await second.wait_connected()
        await asyncio.to_thread(wait_status, server, slug, "live")
    finally:
        await second.close()


def test_a_publisher_that_never_connects_leaves_the_stream_publishable(server):
    asyncio.run(never_connects_then_publishes(server))


# --- bad input -----------------------------------------------------------------------------
def test_bad_requests_get_their_status_and_a_clear_text_body(server):
    slug, key = new_stream(server, "Refusals")
    offer = asyncio.run(some_offer())
    whip = f"{server.url}/streams/{slug}/whip/"

    assert_refused(post_offer(server, slug, None, offer), 401, "publish key")
    assert post_offer(server, slug, None, offer).headers["WWW-Authenticate"].startswith("Bearer")
    assert_refused(post_offer(server, slug, "sk_wrong", offer), 403, "wrong")
    # The endpoint pasted without its last slash is answered, not redirected.
    no_slash = request(
        "POST", whip.rstrip("/"), body=offer, headers={"Content-Type": "application/sdp"}
    )
    assert_refused(no_slash, 401)
    assert_refused(post_offer(server, "no-such-stream", key, offer), 404)
    assert_refused(post_offer(server, slug, key, offer, content_type="text/plain"), 415, "sdp")
    assert_refused(post_offer(server, slug, key, "x" * (65 * 1024)), 413)
    assert_refused(post_offer(server, slug, key, b"\xff\xfe"), 400)
    assert_refused(post_offer(server, slug, key, "v=0\r\nm=video nine RTP 1\r\n"), 400)
    head, *sections = offer.split("m=")
    audio = "m=".join([head, *[part for part in sections if part.startswith("audio")]])
    assert_refused(post_offer(server, slug, key, audio), 422, "no video")
    vp9 = offer.replace("VP8/90000", "VP9/90000").replace("H264/90000", "VP9/90000")
    assert_refused(post_offer(server, slug, key, vp9), 422, "H.264")

    # Methods the specification reserves.
    assert_refused(request("GET", whip), 405)
    assert request("PUT", whip, body="x").headers["Allow"] == "OPTIONS, POST"
    options = request("OPTIONS", whip, headers={"Access-Control-Request-Method": "POST"})
    assert options.status == 204
    assert options.headers["Accept-Post"] == "application/sdp"
    assert "Authorization" in options.headers["Access-Control-Allow-Headers"]
    assert "If-Match" in options.headers["Access-Control-Allow-Headers"]

    # PATCH/DELETE of sessions that do not exist.
    auth = {"Authorization": f"Bearer {key}"}
    frag = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": '"x"', **auth}
    unknown = f"{whip}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/"
    assert_refused(request("PATCH", unknown, body="a=end-of-candidates\r\n", headers=frag), 404)
    assert_refused(request("DELETE", unknown, headers=auth), 404)
    assert_refused(request("DELETE", unknown), 401)

    # Nothing above made the stream go live.
    assert stream_status(server, slug)["status"] == "idle"


async def silent_and_busy(server) -> None:
    """A (goes silent), B (carries on, then hangs up without DELETE), C (over the
    process's cap: 503)."""
    (a_slug, a_key), (b_slug, b_key), (c_slug, c_key) = (
        new_stream(server, title, low_latency=False) for title in ("Silent", "Busy", "Third")
    )
    silent = WhipPublisher(server, a_slug, a_key, audio=False, silent_after=45)
    busy = WhipPublisher(server, b_slug, b_key, audio=False)
    try:
        for publisher in (silent, busy):
            reply = await publisher.publish()
            assert reply.status == 201, reply.body
            assert (await publisher.patch(publisher.fragment())).status == 204
        await asyncio.to_thread(wait_status, server, a_slug, "live")
        await asyncio.to_thread(wait_status, server, b_slug, "live")

        third = await asyncio.to_thread(post_offer, server, c_slug, c_key, await some_offer())
        assert_refused(third, 503)
        assert int(third.headers["Retry-After"]) >= 1

        status = await asyncio.to_thread(wait_status, server, a_slug, "ended", 60)
        assert status["reason"].startswith("idle"), status
        assert silent.pc.connectionState in ("closed", "failed", "connected")
        # The other stream carried on: live, new segments after the silent one ended.
        segments = stream_status(server, b_slug)["segments"]
        assert stream_status(server, b_slug)["status"] == "live"
        await asyncio.to_thread(wait_segments, server, b_slug, segments)
        # A publisher that closes its connection without DELETE: the stream ends too.
        await busy.close()
        status = await asyncio.to_thread(wait_status, server, b_slug, "ended", 60)
        assert not status["reason"].startswith("idle"), status
    finally:
        await silent.close()
        await busy.close()


def test_a_silent_publisher_ends_after_the_idle_timeout_while_another_carries_on(daphne_factory):
    srv = daphne_factory(
        {**SERVER_ENV, "STREAM_WHIP_IDLE_TIMEOUT": "2", "STREAM_MAX_LIVE_PER_PROCESS": "2"}
    )
    asyncio.run(silent_and_busy(srv))
    assert request("GET", f"{srv.url}/streams/").status == 200
