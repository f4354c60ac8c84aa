"""EncodedFeed's fan-out and timelines without FFmpeg: packets dispatched as the reader
thread would, subscriptions that keep up, fall behind or join late, and encoder runs that
start their timestamps again."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import pytest

from streaming.whep_feed import QUEUE_PACKETS, EncodedFeed, FeedEnded

VIDEO_TB = Fraction(1, 30)


def packet(n: int, *, key: bool = False, tb: Fraction = VIDEO_TB) -> av.Packet:
    p = av.Packet(bytes([n % 256]) * 8)
    p.pts = p.dts = n
    p.time_base = tb
    p.is_keyframe = key
    return p


async def test_a_new_subscription_starts_at_the_next_keyframe():
    feed = EncodedFeed("t")
    for n in range(3):
        feed._dispatch("video", packet(n, key=n == 0))
    sub = feed.subscribe("video")
    for n in range(3, 8):
        feed._dispatch("video", packet(n, key=n == 6))
    got = [(await sub.get()).pts for _ in range(2)]
    assert got == [6, 7]
    assert sub.offered_while_waiting == 3  # 3, 4, 5 passed over


async def test_a_slow_video_subscription_skips_to_the_next_keyframe_audio_drops_oldest():
    feed = EncodedFeed("t")
    video, audio = feed.subscribe("video"), feed.subscribe("audio")
    limit = QUEUE_PACKETS["video"]
    feed._dispatch("video", packet(0, key=True))
    for n in range(1, limit + 3):  # one more than the queue holds, nobody reading
        feed._dispatch("video", packet(n))
    feed._dispatch("video", packet(100, key=True))
    assert (await video.get()).pts == 100  # the stale GOP was dropped, not queued
    assert video.skips == 1 and feed.stats.skips == 1
    for n in range(QUEUE_PACKETS["audio"] + 5):
        feed._dispatch("audio", packet(n, tb=Fraction(1, 48000)))
    assert (await audio.get()).pts == 5  # the newest QUEUE_PACKETS["audio"] are kept


async def test_closing_the_feed_ends_every_subscription():
    feed = EncodedFeed("t")
    sub = feed.subscribe("video")
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    feed.close()
    with pytest.raises(FeedEnded):
        await waiting
    with pytest.raises(FeedEnded):
        feed.subscribe("audio")
    assert feed.subscribers("video") == 0


def test_timestamps_keep_increasing_across_encoder_runs():
    feed = EncodedFeed("t")
    out = []
    for _run in range(2):  # each run's timestamps start again near 0
        first: dict[str, int] = {}
        for n in range(5):
            p = packet(n)
            feed._rebase(p, "video", first)
            assert p.time_base == Fraction(1, 90000)
            out.append(p.pts)
    assert out == sorted(set(out)), out
    assert out[:5] == [0, 3000, 6000, 9000, 12000]  # in the 90 kHz RTP clock, from 0
    assert out[5] > out[4]


def test_viewer_caps_per_process_and_per_address(settings, monkeypatch):
    from rtcsite.errors import Busy, RateLimited
    from streaming import whep

    class Viewer:  # what the caps read of a session
        def __init__(self, address_key: str) -> None:
            self.address_key, self.slug = address_key, "s"

    viewers = {Viewer("192.0.2.1") for _ in range(2)}
    monkeypatch.setattr(whep, "_viewers", viewers)
    settings.STREAM_WHEP_MAX_VIEWERS = 3
    settings.STREAM_WHEP_MAX_VIEWERS_PER_ADDRESS = 2
    with pytest.raises(RateLimited):
        whep._check_caps("192.0.2.1")
    whep._check_caps("192.0.2.2")  # another address still gets in
    whep._check_caps("")  # no address (a Unix socket): not counted per address
    viewers.add(Viewer("192.0.2.3"))
    with pytest.raises(Busy):
        whep._check_caps("192.0.2.2")
    settings.STREAM_WHEP_MAX_VIEWERS = 0  # 0: no cap
    whep._check_caps("192.0.2.2")
