"""A WebRTC publisher's decoded frames through the real pipeline (``start_raw``): the same
FFmpeg ladder and CMAF outputs as chunk ingest, from frames written on a constant-rate
schedule (streaming/rawpace.py, streaming/rawfeed.py).

Frames are PyAV frames like the ones aiortc's receivers hand out (video in a 90 kHz time
base, Opus-decoded audio as 20 ms of s16 stereo at 48 kHz), sent in real time by a sender
slower than the stream's frame rate; the outputs are read back with m3u8, mpegdash and PyAV.
"""

from __future__ import annotations

import asyncio
import fractions
import io
import os
import signal
import time
from pathlib import Path

import av
import m3u8
import numpy as np
import pytest
from mpegdash.parser import MPEGDASHParser

from rtcsite.errors import Conflict
from streaming.clock import now_ms, read_clock
from streaming.ffmpeg import EncoderOptions
from streaming.pipeline import PipelineConfig, PipelineState, RawSource, StreamPipeline
from tests.support.media import (
    astronaut_frame,
    check_stitched_vod,
    decoded_frames,
    green_on_top_edge,
)

pytestmark = pytest.mark.timeout(150)

SEGMENT = 1.0


def video_frame(index: int, width: int = 640, height: int = 480, *, image=None) -> av.VideoFrame:
    """A frame as aiortc's decoder gives it: yuv420p, pts in 1/90000 s."""
    if image is None:
        image = np.full((height, width, 3), 40, np.uint8)
        x = (index * 8) % (width - 40)
        image[:, x : x + 40] = (255, 200, 0)  # a moving bar: frames differ
    frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
    frame.pts = index * 3750  # 24 fps in the 90 kHz RTP clock
    frame.time_base = fractions.Fraction(1, 90000)
    return frame


def audio_frame(index: int) -> av.AudioFrame:
    t = (np.arange(960) + index * 960) / 48000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(
        np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo"
    )
    frame.sample_rate = 48000
    frame.pts = index * 960
    frame.time_base = fractions.Fraction(1, 48000)
    return frame


async def send(
    pipeline: StreamPipeline,
    seconds: float,
    *,
    fps: int = 24,
    audio: bool = True,
    size=None,
    first: int = 0,
    image=None,
) -> None:
    """Feed ``seconds`` of frames in real time: video at ``fps``, audio every 20 ms."""
    start = time.monotonic()
    v = a = 0
    while (elapsed := time.monotonic() - start) < seconds:
        while v / fps <= elapsed:
            width, height = size or (640, 480)
            pipeline.feed_video(video_frame(first + v, width, height, image=image))
            v += 1
        while audio and a * 0.02 <= elapsed:
            pipeline.feed_audio(audio_frame(a))
            a += 1
        await asyncio.sleep(0.005)


def make(tmp_path: Path, name: str = "raw", **overrides) -> StreamPipeline:
    encoder = EncoderOptions.from_settings(segment_seconds=SEGMENT, live_window_seconds=4)
    config = PipelineConfig.from_settings(encoder=encoder, **overrides)
    return StreamPipeline(tmp_path / name, config)


def durations(out: Path, rep: int) -> list[float]:
    playlist = m3u8.load(str(out / f"media_{rep}.m3u8"))
    assert playlist.is_endlist and playlist.playlist_type == "vod"
    return [s.duration for s in playlist.segments]


def keyframe_first(out: Path, rep: int, size: tuple[int, int]) -> int:
    init = (out / f"init-stream{rep}.m4s").read_bytes()
    segments = sorted(out.glob(f"chunk-stream{rep}-*.m4s"))
    for path in segments:
        with av.open(io.BytesIO(init + path.read_bytes())) as container:
            frame = next(container.decode(video=0))
            assert frame.key_frame, path.name
            assert (frame.width, frame.height) == size
    return len(segments)


async def test_frames_become_the_same_ladder_and_outputs_as_chunks(tmp_path):
    pipeline = make(tmp_path)
    await pipeline.start_raw(RawSource(640, 480, has_audio=True))
    assert pipeline.state == PipelineState.LIVE
    await send(pipeline, 4.0)
    # the sender changes resolution (congestion): scaled back to the stream's size
    await send(pipeline, 1.0, size=(320, 240), first=96)
    stats, stats_ms = pipeline.stats()["webrtc_input"], now_ms()
    assert await pipeline.stop() == PipelineState.ENDED, pipeline.failure_detail
    out = pipeline.output_dir

    assert stats["video_frames_in"] >= 100 and stats["video_frames_resized"] >= 20
    # 24 fps in, 30 frames per second out, none deferred, and media time 0 is the stream's
    # clock (what every latency readout measures from), not when FFmpeg got started
    capture_ms = read_clock(out).capture_ms
    media_s, clock_s = stats["slots_written"] / 30, (stats_ms - capture_ms) / 1000
    assert abs(media_s - clock_s) <= 0.1 and stats["slots_deferred"] == 0, (media_s, clock_s)
    master = m3u8.load(str(out / "master.m3u8"))
    assert [p.stream_info.resolution for p in master.playlists] == [(640, 480), (480, 360)]
    assert all("mp4a.40.2" in p.stream_info.codecs for p in master.playlists)
    video, audio = sum(durations(out, 0)), sum(durations(out, 2))
    assert abs(video - 5.0) < 0.4, video
    assert abs(audio - video) < 0.3, (audio, video)  # audio kept in step with the video
    assert keyframe_first(out, 0, (640, 480)) == keyframe_first(out, 1, (480, 360)) >= 4
    mpd = MPEGDASHParser.parse(str(out / "manifest.mpd"))
    assert mpd.type == "static"
    sets = mpd.periods[0].adaptation_sets
    assert [(r.width, r.height) for r in sets[0].representations] == [(640, 480), (480, 360)]
    assert sets[1].representations[0].codecs.startswith("mp4a")


async def test_a_video_only_sender_and_a_stalled_camera(tmp_path):
    pipeline = make(tmp_path)
    await pipeline.start_raw(RawSource(320, 240, has_audio=False))
    await send(pipeline, 1.5, audio=False, size=(320, 240))
    await asyncio.sleep(1.5)  # no frames: the picture holds, the timeline goes on
    await send(pipeline, 1.0, audio=False, size=(320, 240), first=36)
    assert await pipeline.stop() == PipelineState.ENDED, pipeline.failure_detail
    out = pipeline.output_dir
    assert (
        not (out / "media_1.m3u8").exists()
        or len(m3u8.load(str(out / "master.m3u8")).playlists) == 1
    )
    assert abs(sum(durations(out, 0)) - 4.0) < 0.4


async def test_chunks_are_refused_once_frames_publish_and_the_other_way(tmp_path):
    pipeline = make(tmp_path)
    await pipeline.start_raw(RawSource(320, 240, has_audio=False))
    with pytest.raises(Conflict) as refused:
        await pipeline.feed(0, b"\x1a\x45\xdf\xa3")
    assert refused.value.code == "publishing"
    with pytest.raises(Exception, match="stream is live"):
        await pipeline.start_raw(RawSource(320, 240, has_audio=False))
    await pipeline.abort("test over")


async def test_a_killed_encoder_restarts_with_the_frames_going_on(tmp_path):
    pipeline = make(tmp_path, max_restarts=2)
    await pipeline.start_raw(RawSource(640, 480, has_audio=True))
    await send(pipeline, 2.5)
    os.kill(pipeline.pid, signal.SIGKILL)
    await send(pipeline, 3.0, first=60)
    assert pipeline.restarts == 1 and pipeline.run == 1
    assert await pipeline.stop() == PipelineState.ENDED, pipeline.failure_detail
    counts = check_stitched_vod(pipeline.output_dir, runs=2)
    assert counts[0] >= 3


async def test_face_boxes_are_drawn_into_webrtc_frames_too(tmp_path):
    image, face = astronaut_frame(640, 480)
    pipeline = make(tmp_path, face_overlay=True)
    await pipeline.start_raw(RawSource(640, 480, has_audio=True))
    await send(pipeline, 4.0, image=image)
    assert await pipeline.stop() == PipelineState.ENDED, pipeline.failure_detail
    frames = decoded_frames(pipeline.output_dir, rep=0, last=2)
    assert frames and green_on_top_edge(frames[-1], face)
    assert sum(durations(pipeline.output_dir, 2)) > 3  # the audio is there too
