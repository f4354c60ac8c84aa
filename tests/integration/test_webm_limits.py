"""A WebM header that lies about its frame size, through the real pipeline and real Daphne.

A generated 640x480 clip (real FFmpeg, tests/support/media.py) has its header's
PixelWidth/PixelHeight rewritten (``with_frame_size``) and is published with the face
overlay on, the path that sizes buffers from the header. A size the site does not take
fails the stream with a short public reason before anything starts: no FFmpeg, no drawing
thread left over, and no CPU burnt afterwards (a spinning thread would burn about as much
CPU time as the interval measured). An odd size is taken, rounded down to even, and is one
whose rungs do not keep the aspect ratio exactly (638x478 → 480x360): the stream goes
live and writes HLS and DASH.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import m3u8
import pytest
from django.conf import settings

from streaming.ffmpeg import EncoderOptions
from streaming.overlay import THREAD_JOIN_TIMEOUT
from streaming.pipeline import (
    Backpressure,
    PipelineConfig,
    PipelineState,
    StreamClosed,
    StreamPipeline,
)
from tests.support.ingest import media_cache, new_stream, post_chunk, stream_status
from tests.support.media import cached_webm, mediarecorder_chunks, with_frame_size

pytestmark = pytest.mark.timeout(180)

IDLE_INTERVAL = 2.0  # seconds of CPU time measured after the failure
BAD_SIZES = [(1, 1), (0, 0), (65535, 65535)]


@pytest.fixture(scope="module")
def clip(request, tmp_path_factory) -> bytes:
    return cached_webm(media_cache(request, tmp_path_factory), seconds=3, size="640x480", fps=30)


def chunks_of(clip: bytes, width: int, height: int) -> list[bytes]:
    return [c.data for c in mediarecorder_chunks(with_frame_size(clip, width, height), 250)]


def overlay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("overlay")]


def make_pipeline(tmp_path: Path) -> StreamPipeline:
    encoder = EncoderOptions.from_settings(segment_seconds=1.0, live_window_seconds=0)
    config = PipelineConfig.from_settings(encoder=encoder, face_overlay=True, idle_timeout=None)
    return StreamPipeline(tmp_path / "stream", config)


@pytest.mark.parametrize("width,height", BAD_SIZES, ids=lambda v: str(v))
async def test_a_bad_frame_size_fails_the_stream_and_leaves_nothing_running(
    tmp_path, clip, width, height
):
    chunks = chunks_of(clip, width, height)
    threads_before = threading.active_count()
    pipeline = make_pipeline(tmp_path)
    reason = f"unsupported video: {width}x{height} frame size"
    async with asyncio.timeout(settings.STREAM_STOP_TIMEOUT):
        with pytest.raises(StreamClosed) as closed:
            for seq, chunk in enumerate(chunks):
                await pipeline.feed(seq, chunk, wait=5)
    assert reason in closed.value.message
    assert pipeline.state == PipelineState.FAILED and pipeline.reason == reason
    assert pipeline.process is None  # no FFmpeg was started from that header
    async with asyncio.timeout(settings.STREAM_STOP_TIMEOUT):
        assert await pipeline.stop() == PipelineState.FAILED
    assert overlay_threads() == []
    assert threading.active_count() == threads_before

    cpu_before = time.process_time()  # every thread of this process
    await asyncio.sleep(IDLE_INTERVAL)
    used = time.process_time() - cpu_before
    assert used < IDLE_INTERVAL / 2, f"{used:.2f} s of CPU in {IDLE_INTERVAL} s idle"


async def test_an_odd_frame_size_goes_live_and_writes_hls_and_dash(tmp_path, clip):
    """639x479: the overlay rounds to 638x478, the ladder gives 478p + 360p; the 360p rung
    (480x360) is not 638:478 exactly, which the dash muxer refused before the raw input got
    square pixels ("Conflicting stream aspect ratios")."""
    pipeline = make_pipeline(tmp_path)
    for seq, chunk in enumerate(chunks_of(clip, 639, 479)):
        await pipeline.feed(seq, chunk, wait=10)
    async with asyncio.timeout(settings.STREAM_STOP_TIMEOUT + 5):
        state = await pipeline.stop()
    assert state == PipelineState.ENDED, (pipeline.reason, pipeline.failure_detail)
    assert [r.name for r in pipeline.renditions] == ["478p", "360p"]
    out = pipeline.output_dir
    master = m3u8.load(str(out / "master.m3u8"))
    assert [p.stream_info.resolution for p in master.playlists] == [(638, 478), (480, 360)]
    assert 'type="static"' in (out / "manifest.mpd").read_text()
    assert pipeline.segments_written()[0] >= 2
    assert overlay_threads() == []


# --- through the real ingest of a real Daphne -------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _publish_1x1(server, chunks) -> str:
    """A face-overlay stream whose first chunk declares 1x1: refused, the stream failed."""
    slug, key = new_stream(server, face_overlay=True)
    status, body = post_chunk(server, slug, key, 0, chunks[0])
    assert status == 409 and body["error"] == "closed", body
    assert "unsupported video: 1x1 frame size" in body["message"]
    status, body = post_chunk(server, slug, key, 1, chunks[1])
    assert status == 409 and body["error"] == "closed", body
    deadline = time.monotonic() + 15
    while stream_status(server, slug)["status"] != "failed":
        assert time.monotonic() < deadline, stream_status(server, slug)
        time.sleep(0.1)
    assert stream_status(server, slug)["reason"] == "unsupported video: 1x1 frame size"
    return slug


def test_http_ingest_of_a_1x1_header_fails_the_stream_with_a_public_reason(daphne_factory, clip):
    server = daphne_factory({"STREAM_IDLE_TIMEOUT": "30"})
    chunks = chunks_of(clip, 1, 1)
    # A first refused stream warms every pool the path uses (the database and status
    # threads grow on demand); a second must leave no thread behind and burn no CPU.
    _publish_1x1(server, chunks)
    threads_before = thread_count(server.pid)
    _publish_1x1(server, chunks)

    cpu_before = cpu_seconds(server.pid)
    time.sleep(IDLE_INTERVAL)
    used = cpu_seconds(server.pid) - cpu_before
    assert used < IDLE_INTERVAL / 2, f"Daphne used {used:.2f} s of CPU in {IDLE_INTERVAL} s"
    assert thread_count(server.pid) <= threads_before
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _parent(p) == server.pid]


def _parent(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return None


async def test_stop_returns_in_time_when_the_overlay_encoder_hangs(tmp_path, clip):
    """FFmpeg #2 stopped (SIGSTOP) while the stream ends: stop() kills both FFmpegs after
    ``stop_timeout`` and returns; both are reaped, the drawing thread is gone."""
    encoder = EncoderOptions.from_settings(segment_seconds=1.0, live_window_seconds=0)
    config = PipelineConfig.from_settings(
        encoder=encoder, face_overlay=True, idle_timeout=None, stop_timeout=2.0
    )
    pipeline = StreamPipeline(tmp_path / "stream", config)
    chunks = chunks_of(clip, 640, 480)
    for seq, chunk in enumerate(chunks[:6]):
        await pipeline.feed(seq, chunk, wait=10)
    overlay = pipeline.process
    os.kill(overlay.encoder.pid, signal.SIGSTOP)
    for seq, chunk in enumerate(chunks[6:], start=6):
        with contextlib.suppress(Backpressure):
            await pipeline.feed(seq, chunk)
    async with asyncio.timeout(config.stop_timeout + THREAD_JOIN_TIMEOUT + 10):
        assert await pipeline.stop() == PipelineState.FAILED
    assert "did not finish" in pipeline.reason
    for pid in (overlay.decoder.pid, overlay.encoder.pid):
        assert_reaped(pid)
    assert overlay_threads() == []


def assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # waited for already: not our child any more
