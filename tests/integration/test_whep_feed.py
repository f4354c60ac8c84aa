"""The WebRTC rendition and its viewers in one process: the real FFmpeg command with its
WebRTC output (``build_command(webrtc_fd=...)``), the real ``EncodedFeed`` reading it, and
real aiortc viewers answered by ``WhepSession``: decoded frames of the rendition's size, a
viewer joining mid-stream starting on a keyframe, two encoder runs whose timestamps keep
increasing, no encoder in any viewer's sender, and the per-process cap.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiortc import RTCSessionDescription

from presence import services as presence
from rtcsite.errors import Busy
from streaming import services, whep
from streaming.ffmpeg import EncoderOptions, build_command, spawn, webrtc_rendition
from streaming.ladder import rendition
from streaming.whep_feed import EncodedFeed, FeedEnded
from tests.support.ingest import media_cache
from tests.support.media import cached_webm, mediarecorder_chunks
from tests.support.whep import WhepReceiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

SECONDS = 6
LADDER = [rendition(360)]  # the WebRTC rendition is then 360p: 480x360 from 640x480


class StreamEnd:
    """What a session needs of a pipeline: its end."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait_closed(self) -> None:
        await self.event.wait()


class Viewer(WhepReceiver):
    """A WHEP viewer talking to the session in this process (no HTTP)."""

    async def watch(self, session: whep.WhepSession) -> None:
        answer = await session.answer(await self.offer())
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))


async def encode(feed: EncodedFeed, chunks, out: Path) -> None:
    """One encoder run as the pipeline makes it: the stream's command with the WebRTC
    output on a pipe from ``feed.open()``, the WebM chunks written at their media times."""
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    fd = feed.open()
    try:
        cmd = build_command(out, LADDER, options=EncoderOptions.from_settings(), webrtc_fd=fd)
        proc = await spawn(
            cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(fd,),
        )
    finally:
        os.close(fd)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for chunk in chunks:
        await asyncio.sleep(max(0.0, start + chunk.end_ms / 1000 - 0.25 - loop.time()))
        proc.stdin.write(chunk.data)
        await proc.stdin.drain()
    proc.stdin.close()
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]


def nal_types(data: bytes) -> set[int]:
    """NAL unit types of an Annex B access unit."""
    types, i = set(), data.find(b"\0\0\1")
    while i != -1:
        types.add(data[i + 3] & 0x1F)
        i = data.find(b"\0\0\1", i + 3)
    return types


async def collect(sub, into: list) -> None:
    try:
        while True:
            into.append(await sub.get())
    except FeedEnded:
        return


@pytest.fixture
def chunks(request, tmp_path_factory):
    clip = cached_webm(
        media_cache(request, tmp_path_factory), seconds=SECONDS, size="640x480", fps=30
    )
    return mediarecorder_chunks(clip, timeslice_ms=250)


async def test_viewers_get_the_one_encode_from_keyframes_across_encoder_runs(
    chunks, tmp_path, settings
):
    settings.SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES = True  # the viewer's loopback candidates
    settings.STREAM_WHEP_MAX_VIEWERS = 2
    options = EncoderOptions.from_settings()
    gop = options.webrtc_gop_frames
    size = webrtc_rendition(LADDER).height
    feed = EncodedFeed("test")
    end = StreamEnd()
    early_video, early_audio = [], []
    early = [
        asyncio.create_task(collect(feed.subscribe("video"), early_video)),
        asyncio.create_task(collect(feed.subscribe("audio"), early_audio)),
    ]

    first = Viewer()
    session1 = whep.WhepSession("whep-test", "127.0.0.1", feed, end)
    await first.watch(session1)
    run1 = asyncio.create_task(encode(feed, chunks, tmp_path / "run0"))
    await asyncio.wait_for(first.got_video.wait(), 60)

    # A viewer joining mid-stream: its video starts at the next keyframe, within one GOP.
    second = Viewer()
    session2 = whep.WhepSession("whep-test", "127.0.0.1", feed, end)
    await second.watch(session2)
    video_sub2 = session2.tracks[0].subscription
    assert whep.viewer_count("whep-test") == 2
    with pytest.raises(Busy):  # the per-process cap (2 here): 503 before any peer work
        whep._check_caps("127.0.0.2")
    await asyncio.wait_for(second.got_video.wait(), 60)
    assert video_sub2.offered_while_waiting < gop
    # Both count as the stream's viewers, like viewer pages.
    assert len(await presence.members(services.viewer_room("whep-test"))) == 2
    # No encoder in any sender: aiortc's H.264 encoder object only packs (its libx264
    # context was never made), and every sender sent packets.
    for session in (session1, session2):
        for sender in session.pc.getSenders():
            stats = [s for s in (await sender.getStats()).values() if s.type == "outbound-rtp"]
            assert stats and stats[0].packetsSent > 0
            if sender.kind == "video":
                assert sender._RTCRtpSender__encoder.codec is None
    await run1

    await encode(feed, chunks, tmp_path / "run1")  # the encoder restarted: a second run
    assert feed.stats.runs == 2 and feed.stats.errors == 0
    end.event.set()  # the stream ends: sessions close, tracks end
    feed.close()
    await asyncio.gather(*early)
    for _ in range(100):
        if session1.closed and session2.closed and not whep.viewer_count():
            break
        await asyncio.sleep(0.1)
    assert session1.closed and session2.closed and whep.viewer_count() == 0

    # What the viewers decoded: the rendition's size, video and audio.
    width = round(640 * size / 480)
    for viewer in (first, second):
        assert viewer.sizes and set(viewer.sizes) == {(width, size)}, set(viewer.sizes)
        assert viewer.audio_frames > 0
    # The feed's packets: video from a keyframe, Annex B with SPS/PPS at keyframes, and
    # timestamps increasing across both runs (for video and audio).
    assert early_video[0].is_keyframe
    keyframes = [p for p in early_video if p.is_keyframe]
    assert len(keyframes) >= 2 * (SECONDS * 30 // gop) - 2
    for packet in keyframes:
        assert {5, 7, 8} <= nal_types(bytes(packet)), nal_types(bytes(packet))
    for packets in (early_video, early_audio):
        stamps = [p.pts for p in packets]
        assert stamps == sorted(set(stamps)), "timestamps went backwards or repeated"
    await first.close()
    await second.close()
