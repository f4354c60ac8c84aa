"""The live pipeline with the real FFmpeg (the bundled ffmpeg 9) on a generated WebM.

The clip: 8 s of lavfi ``testsrc2`` 640x480 at 30 fps + a 440 Hz tone, VP8 + Opus, cut
into MediaRecorder-like chunks of 250 ms (``tests/support/media.py``). The main test
feeds it in real time (1x) and measures chunk-in → segment-on-disk; the others feed at
4x real time or as fast as FFmpeg takes it, to keep the suite short. Outputs are checked
with parsers (``m3u8``, ``mpegdash``) and a demuxer/decoder (PyAV: the bundled FFmpeg
has no ffprobe). A killed encoder restarts (``max_restarts``): the playlists go on with a
discontinuity, or the stream fails with its reason once the budget is spent; the restart
gap (kill → first segment of the new encoder) is printed, a figure, not a threshold.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import statistics
import time
from pathlib import Path

import av
import m3u8
import pytest
from mpegdash.parser import MPEGDASHParser

from streaming.ffmpeg import EncoderOptions
from streaming.pipeline import (
    Backpressure,
    InvalidChunk,
    PipelineConfig,
    PipelineState,
    StreamClosed,
    StreamPipeline,
)
from tests.support.ingest import media_cache
from tests.support.media import (
    TimedChunk,
    cached_webm,
    check_stitched_vod,
    mediarecorder_chunks,
)

pytestmark = pytest.mark.timeout(120)

CLIP_SECONDS = 8
SEGMENT = 1.0


# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory, request) -> Path:
    """Generated clips are kept between runs (keyed by parameters)."""
    return media_cache(request, tmp_path_factory)


@pytest.fixture(scope="session")
def clip(clip_dir) -> bytes:
    return cached_webm(clip_dir, seconds=CLIP_SECONDS, size="640x480", fps=30)


@pytest.fixture(scope="session")
def chunks(clip) -> list[TimedChunk]:
    return mediarecorder_chunks(clip, timeslice_ms=250)


def assert_reaped(pid: int) -> None:
    """The FFmpeg child was waited for: not our child any more, no zombie left."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():  # the pid may have been reused by an unrelated process, never a zombie
        assert stat.read_text().split(")")[-1].split()[0] != "Z"


@pytest.fixture
async def make_pipeline(tmp_path):
    made: list[StreamPipeline] = []

    def make(window: float = 4.0, **overrides) -> StreamPipeline:
        overrides.setdefault(
            "encoder",
            EncoderOptions.from_settings(segment_seconds=SEGMENT, live_window_seconds=window),
        )
        config = PipelineConfig.from_settings(**overrides)
        pipeline = StreamPipeline(tmp_path / f"stream{len(made)}", config)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        if not pipeline.closed:  # a failed test left it running: kill (and reap) it
            await pipeline.abort("test teardown")
        if pipeline.pid:
            assert_reaped(pipeline.pid)


async def feed_paced(pipeline, chunks, *, speed: float, order=None, fed_at=None):
    """Feed ``chunks`` (by index, in ``order``) at ``speed`` x real time."""
    start = time.monotonic()
    results = {}
    for seq in order if order is not None else range(len(chunks)):
        due = start + chunks[seq].end_ms / 1000 / speed
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        results.setdefault(seq, []).append(await pipeline.feed(seq, chunks[seq].data, wait=10))
        if fed_at is not None:
            fed_at.setdefault(seq, time.monotonic())
    return results


async def wait_for(predicate, within: float = 15.0, period: float = 0.02):
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(period)


# --- output checks -------------------------------------------------------------------------
def check_keyframe_segments(out: Path, rep: int, width: int, height: int) -> int:
    """Every segment of ``rep`` decodes on its own (with init) and starts with a keyframe."""
    init = (out / f"init-stream{rep}.m4s").read_bytes()
    segments = sorted(out.glob(f"chunk-stream{rep}-*.m4s"))
    for path in segments:
        with av.open(io.BytesIO(init + path.read_bytes())) as container:
            packets = [p for p in container.demux(video=0) if p.size]
            assert packets[0].is_keyframe, f"{path.name} does not start with a keyframe"
            assert sum(p.is_keyframe for p in packets) == 1, f"{path.name}: one GOP per segment"
            assert 25 <= len(packets) <= 35 or path == segments[-1], (path.name, len(packets))
        with av.open(io.BytesIO(init + path.read_bytes())) as container:
            frame = next(container.decode(video=0))
            assert frame.key_frame
            assert (frame.width, frame.height) == (width, height)
    return len(segments)


def check_final_outputs(out: Path, *, segments: int, seconds: float) -> None:
    master = m3u8.load(str(out / "master.m3u8"))
    variants = [(p.stream_info.resolution, p.stream_info.bandwidth) for p in master.playlists]
    assert [v[0] for v in variants] == [(640, 480), (480, 360)], variants
    assert variants[0][1] > variants[1][1] > 0
    assert all("mp4a.40.2" in p.stream_info.codecs for p in master.playlists)
    assert [m.type for m in master.media] == ["AUDIO"]

    for rep in (0, 1, 2):
        playlist = m3u8.load(str(out / f"media_{rep}.m3u8"))
        assert playlist.is_endlist, f"media_{rep}.m3u8 has no #EXT-X-ENDLIST"
        assert playlist.playlist_type == "vod"
        durations = [s.duration for s in playlist.segments]
        assert len(durations) == segments, (rep, durations)
        assert all(abs(d - SEGMENT) < 0.05 for d in durations[1:-1]), durations
        assert abs(sum(durations) - seconds) < 0.3, durations
        assert playlist.target_duration >= 1
        assert all(s.program_date_time for s in playlist.segments)

    mpd = MPEGDASHParser.parse(str(out / "manifest.mpd"))
    assert mpd.type == "static"
    video, audio = mpd.periods[0].adaptation_sets
    assert [(r.width, r.height) for r in video.representations] == [(640, 480), (480, 360)]
    assert len(audio.representations) == 1
    for rep in [*video.representations, audio.representations[0]]:
        template = rep.segment_templates[0]
        assert int(template.start_number) == 1
        count = sum(int(s.r or 0) + 1 for s in template.segment_timelines[0].Ss)
        assert count == segments, (rep.id, count)
    assert check_keyframe_segments(out, 0, 640, 480) == segments
    assert check_keyframe_segments(out, 1, 480, 360) == segments


# --- tests ---------------------------------------------------------------------------------
async def test_real_time_stream_to_hls_and_dash_with_ladder(make_pipeline, chunks, capsys):
    """1x real time; live window 4 s; ended stream is a complete VOD; delay measured."""
    pipeline = make_pipeline(window=4.0)
    out = pipeline.output_dir
    appeared: dict[int, float] = {}
    live_snapshots: list[tuple[str, str]] = []

    async def watch():
        while True:
            for path in out.glob("chunk-stream0-*.m4s") if out.exists() else ():
                appeared.setdefault(int(path.stem.rsplit("-", 1)[1]), time.monotonic())
            if len(appeared) == 6 and not live_snapshots:
                live_snapshots.append(
                    ((out / "media_0.m3u8").read_text(), (out / "manifest.mpd").read_text())
                )
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    fed_at: dict[int, float] = {}
    try:
        results = await feed_paced(pipeline, chunks, speed=1.0, fed_at=fed_at)
        assert pipeline.state == PipelineState.LIVE
        assert all(r[0].status == "accepted" for r in results.values())
        state = await pipeline.stop()
    finally:
        watcher.cancel()
    assert state == PipelineState.ENDED, pipeline.reason
    assert_reaped(pipeline.pid)

    # While live: a 4-segment window, a dynamic MPD, no end tag.
    live_hls, live_mpd = live_snapshots[0]
    live = m3u8.loads(live_hls)
    assert not live.is_endlist and len(live.segments) == 4 and live.media_sequence >= 2
    assert 'type="dynamic"' in live_mpd

    # Ended: every segment listed, finalised playlists, keyframe-aligned 1 s segments.
    check_final_outputs(out, segments=CLIP_SECONDS, seconds=CLIP_SECONDS)
    stats = pipeline.stats()
    assert stats["chunks"] == len(chunks)
    assert stats["bytes_in"] == stats["bytes_written"] == sum(len(c.data) for c in chunks)
    assert stats["segments"] == CLIP_SECONDS
    assert stats["renditions"] == ["480p", "360p"]
    assert stats["queue_bytes"] == 0 and stats["gaps"] == 0

    # Chunk-in → segment-on-disk: segment k is complete once the frame at k s (the next
    # keyframe) has been fed, i.e. with the first chunk whose media reaches k s.
    delays = []
    for k in range(1, CLIP_SECONDS):
        seq = next(i for i, c in enumerate(chunks) if c.end_ms >= k * 1000)
        delays.append(appeared[k] - fed_at[seq])
    with capsys.disabled():
        print(
            f"\n[pipeline] chunk-in → segment-on-disk (s): median {statistics.median(delays):.3f}, "
            f"max {max(delays):.3f}, all {[round(d, 3) for d in delays]}"
        )
    # No timing threshold here (shared machines; the figure is bench/bench_stream_pipeline's):
    # each segment appears after the chunk that completes it, i.e. it is written live, as
    # the media arrives, not at the end of the stream.
    assert len(delays) == CLIP_SECONDS - 1 and all(d > 0 for d in delays), delays


async def test_duplicates_reordering_and_a_missing_chunk(make_pipeline, chunks):
    """4x real time. 2 sent twice, 4 before 3, 10 lost (late after its gap was skipped)."""
    pipeline = make_pipeline(gap_timeout=0.5)
    r = await pipeline.feed(0, chunks[0].data)
    assert (r.status, r.released) == ("accepted", 1)
    await pipeline.feed(1, chunks[1].data)
    await pipeline.feed(2, chunks[2].data)
    assert (await pipeline.feed(2, chunks[2].data)).status == "duplicate"
    assert (await pipeline.feed(4, chunks[4].data)).status == "held"
    r = await pipeline.feed(3, chunks[3].data)
    assert (r.status, r.released) == ("accepted", 2)

    order = [*range(5, 10), *range(11, 18)]
    await feed_paced(pipeline, chunks, speed=4.0, order=order)
    await wait_for(lambda: pipeline.stats()["gaps"] == 1, within=5)
    assert (await pipeline.feed(10, chunks[10].data)).status == "duplicate"  # too late
    await feed_paced(pipeline, chunks, speed=4.0, order=range(18, len(chunks)))
    assert await pipeline.stop() == PipelineState.ENDED, pipeline.reason

    stats = pipeline.stats()
    assert stats["duplicates"] == 1 and stats["late_chunks"] == 1
    assert stats["gaps"] == 1 and stats["missing_chunks"] == 1
    assert stats["reordered"] >= 2 and stats["resyncs"] == 1
    assert stats["chunks"] == len(chunks) - 1
    assert "seq=10..10 missing" in pipeline.last_error
    # The stream carried on across the gap: the whole timeline is there (FFmpeg's fps
    # filter repeats the last frame over the lost ~250 ms).
    for rep in (0, 1, 2):
        playlist = m3u8.load(str(pipeline.output_dir / f"media_{rep}.m3u8"))
        assert playlist.is_endlist
        assert abs(sum(s.duration for s in playlist.segments) - CLIP_SECONDS) < 0.5
    check_keyframe_segments(pipeline.output_dir, 0, 640, 480)


async def test_garbage_chunks_are_refused_and_do_not_harm_the_stream(make_pipeline, chunks):
    pipeline = make_pipeline()
    with pytest.raises(
        InvalidChunk, match=r"seq=0 refused: not a WebM stream: .*EBML magic"
    ) as refused:
        await pipeline.feed(0, b"<!DOCTYPE html><html><body>Not WebM</body></html>")
    # Told to the publisher as it is: code, HTTP status and the chunk's seq.
    assert (refused.value.code, refused.value.status) == ("invalid", 400)
    assert refused.value.details == {"seq": 0}
    assert pipeline.state == PipelineState.IDLE and pipeline.process is None

    for seq, chunk in enumerate(chunks):
        if seq == 5:
            with pytest.raises(InvalidChunk, match="not a continuation of the WebM stream"):
                await pipeline.feed(5, b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(3000))
        if seq == 9:
            with pytest.raises(InvalidChunk):
                await pipeline.feed(9, os.urandom(20_000))
            assert pipeline.state == PipelineState.LIVE
        if seq == 12:
            with pytest.raises(InvalidChunk, match="restarted its recorder"):
                await pipeline.feed(12, chunks[0].data)  # a second recording's header
        await pipeline.feed(seq, chunk.data, wait=10)
    assert await pipeline.stop() == PipelineState.ENDED, pipeline.reason
    stats = pipeline.stats()
    assert stats["rejected_chunks"] == 4 and stats["gaps"] == 0
    assert stats["chunks"] == len(chunks)
    check_final_outputs(pipeline.output_dir, segments=CLIP_SECONDS, seconds=CLIP_SECONDS)


async def test_ffmpeg_killed_mid_stream_fails_the_stream_without_a_zombie(make_pipeline, chunks):
    """Without a restart budget (STREAM_ENCODER_RESTARTS=0) a kill fails the stream."""
    pipeline = make_pipeline(max_restarts=0)
    await feed_paced(pipeline, chunks, speed=4.0, order=range(12))
    await wait_for(lambda: pipeline.stats()["segments"] >= 1)
    pid = pipeline.pid
    os.kill(pid, signal.SIGKILL)
    async with asyncio.timeout(10):
        assert await pipeline.wait_closed() == PipelineState.FAILED
    assert pipeline.reason == "encoder failed"  # public; FFmpeg's words are for staff
    assert "FFmpeg killed by signal 9 unexpectedly" in pipeline.failure_detail
    assert_reaped(pid)
    with pytest.raises(StreamClosed, match="failed") as closed:
        await pipeline.feed(12, chunks[12].data)
    assert (closed.value.code, closed.value.status) == ("closed", 409)
    assert pipeline.stats()["queue_bytes"] == 0


async def test_ffmpeg_error_exit_reports_its_last_stderr_lines(make_pipeline, chunks):
    """The output folder vanishes: FFmpeg exits with an error; its words become the staff
    detail, never the public reason (they name server paths)."""
    pipeline = make_pipeline()
    await feed_paced(pipeline, chunks, speed=4.0, order=range(6))
    await wait_for(lambda: pipeline.stats()["segments"] >= 1)
    shutil.rmtree(pipeline.output_dir)
    with pytest.raises((StreamClosed, Backpressure)):
        for seq in range(6, len(chunks)):
            await pipeline.feed(seq, chunks[seq].data, wait=5)
            await asyncio.sleep(0.05)
    async with asyncio.timeout(10):
        assert await pipeline.wait_closed() == PipelineState.FAILED
    assert pipeline.reason == "encoder failed", pipeline.reason
    assert str(pipeline.output_dir) not in pipeline.reason
    assert "FFmpeg exited with code" in pipeline.failure_detail
    assert "No such file or directory" in pipeline.failure_detail, pipeline.failure_detail
    assert 0 < len(pipeline.stderr_tail) <= pipeline.config.stderr_lines
    assert_reaped(pipeline.pid)


async def test_backpressure_when_ffmpeg_falls_behind(make_pipeline, chunks):
    """FFmpeg stopped (SIGSTOP) = a writer that cannot drain: the queue stays bounded."""
    limit = 96 * 1024
    pipeline = make_pipeline(max_queue_bytes=limit, max_chunk_bytes=64 * 1024)
    await pipeline.feed(0, chunks[0].data)
    os.kill(pipeline.pid, signal.SIGSTOP)
    try:
        seq = 1
        with pytest.raises(Backpressure) as busy:
            while seq < len(chunks):
                await pipeline.feed(seq, chunks[seq].data)
                seq += 1
                await asyncio.sleep(0.05)  # the writer fills the pipe until it blocks
        assert busy.value.limit == limit and busy.value.queue_bytes <= limit
        assert "busy" in str(busy.value) and busy.value.code == "busy"
        assert busy.value.status == 503 and busy.value.retry_after == 1
        assert busy.value.details["queue_bytes"] == busy.value.queue_bytes
        assert pipeline.queue_bytes <= limit
        # Waiting gives FFmpeg a chance; it is still stopped, so still busy after the wait.
        started = time.monotonic()
        with pytest.raises(Backpressure):
            await pipeline.feed(seq, chunks[seq].data, wait=0.3)
        assert time.monotonic() - started >= 0.3
        assert pipeline.stats()["backpressure"] == 2
    finally:
        os.kill(pipeline.pid, signal.SIGCONT)
    # The refused chunk was not consumed: the same seq goes in once FFmpeg catches up.
    assert (await pipeline.feed(seq, chunks[seq].data, wait=10)).status == "accepted"
    await feed_paced(pipeline, chunks, speed=100, order=range(seq + 1, len(chunks)))
    assert await pipeline.stop() == PipelineState.ENDED, pipeline.reason
    assert pipeline.stats()["chunks"] == len(chunks)


async def test_stop_kills_ffmpeg_that_does_not_finish(make_pipeline, chunks):
    pipeline = make_pipeline(stop_timeout=1.0)
    await feed_paced(pipeline, chunks, speed=100, order=range(4))
    pid = pipeline.pid
    os.kill(pid, signal.SIGSTOP)  # hung FFmpeg: SIGKILL still works on a stopped process
    started = time.monotonic()
    assert await pipeline.stop() == PipelineState.FAILED
    assert 1.0 <= time.monotonic() - started < 5
    assert "did not finish within 1 s" in pipeline.reason
    assert_reaped(pid)


async def test_idle_timeout_ends_an_abandoned_stream(make_pipeline, chunks):
    pipeline = make_pipeline(idle_timeout=1.0)
    await feed_paced(pipeline, chunks, speed=4.0, order=range(10))
    async with asyncio.timeout(15):
        assert await pipeline.wait_closed() == PipelineState.ENDED
    assert pipeline.reason.startswith("idle")
    playlist = m3u8.load(str(pipeline.output_dir / "media_0.m3u8"))
    assert playlist.is_endlist and len(playlist.segments) >= 2
    assert_reaped(pipeline.pid)


async def test_video_only_small_source_gets_one_rung_and_no_audio(make_pipeline, clip_dir):
    """A 320x240 camera without microphone: never upscaled, no audio track."""
    data = cached_webm(clip_dir, seconds=3, size="320x240", fps=30, audio=False)
    pipeline = make_pipeline()
    small = mediarecorder_chunks(data, timeslice_ms=500)
    await feed_paced(pipeline, small, speed=100)
    assert await pipeline.stop() == PipelineState.ENDED, pipeline.reason
    assert [r.height for r in pipeline.renditions] == [240]
    master = m3u8.load(str(pipeline.output_dir / "master.m3u8"))
    assert [p.stream_info.resolution for p in master.playlists] == [(320, 240)]
    assert not master.media
    mpd = MPEGDASHParser.parse(str(pipeline.output_dir / "manifest.mpd"))
    assert [a.content_type for a in mpd.periods[0].adaptation_sets] == ["video"]
    assert check_keyframe_segments(pipeline.output_dir, 0, 320, 240) == 3


async def test_a_missing_ffmpeg_binary_fails_the_stream_clearly(tmp_path, chunks):
    config = PipelineConfig.from_settings()
    pipeline = StreamPipeline(tmp_path / "s", config, binary=str(tmp_path / "no-ffmpeg"))
    with pytest.raises(StreamClosed, match="encoder could not start"):
        await pipeline.feed(0, chunks[0].data)
    assert pipeline.state == PipelineState.FAILED and pipeline.process is None
    assert "could not start FFmpeg" in pipeline.failure_detail  # staff only: names a path
    with pytest.raises(StreamClosed):
        await pipeline.feed(1, chunks[1].data)


# --- a killed encoder restarted (streaming/runs.py) ------------------------------------------
async def test_killed_encoder_restarts_and_the_playlists_go_on(make_pipeline, chunks, capsys):
    """1x real time: killed after ~3 s, restarted, the stream carries on to a valid VOD."""
    pipeline = make_pipeline(window=4.0, max_restarts=3)
    out = pipeline.output_dir
    split = 12  # 3 s of 250 ms chunks
    await feed_paced(pipeline, chunks, speed=1.0, order=range(split))
    await wait_for(lambda: pipeline.stats()["segments"] >= 2)
    first_pid = pipeline.pid
    before = pipeline.stats()["segments"]
    killed_at = time.monotonic()
    os.kill(first_pid, signal.SIGKILL)

    new_segment_at: list[float] = []
    live_view: list[str] = []

    async def watch():
        while True:
            if not new_segment_at and list(out.glob("run1/chunk-stream0-*.m4s")):
                new_segment_at.append(time.monotonic())
            text = (out / "media_0.m3u8").read_text() if (out / "run1").exists() else ""
            if not live_view and "run1/chunk-stream0-" in text:
                live_view.append(text)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        rest = chunks[split:]
        started = time.monotonic()
        for offset, chunk in enumerate(rest):
            due = started + (chunk.end_ms - chunks[split - 1].end_ms) / 1000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            assert (await pipeline.feed(split + offset, chunk.data, wait=10)).status in (
                "accepted",
                "held",
            )
        await wait_for(lambda: bool(live_view), within=10)
        assert pipeline.state == PipelineState.LIVE and pipeline.restarts == 1
        assert pipeline.pid != first_pid
        assert_reaped(first_pid)  # the killed FFmpeg was waited for: no zombie
        state = await pipeline.stop()
    finally:
        watcher.cancel()
    assert state == PipelineState.ENDED, (pipeline.reason, pipeline.failure_detail)
    assert_reaped(pipeline.pid)

    # While run 1 was live: the stream's own playlist went on, numbered on, with a
    # discontinuity and run 1's init section, no end.
    live = m3u8.loads(live_view[0])
    assert not live.is_endlist
    assert any(s.discontinuity for s in live.segments) or live.discontinuity_sequence == 1
    assert live.segments[-1].uri.startswith("run1/")
    assert live.media_sequence + len(live.segments) - 1 > before

    counts = check_stitched_vod(out, runs=2)
    assert counts[0] >= before + 2, counts
    assert pipeline.stats()["segments"] == counts[0]
    assert pipeline.exits[0] == -signal.SIGKILL and pipeline.exits[-1] == 0
    gap = new_segment_at[0] - killed_at
    with capsys.disabled():
        print(
            f"\n[restart] kill → first segment of the new encoder: {gap:.2f} s "
            f"({SEGMENT} s segments)"
        )


async def test_restart_budget_spent_fails_the_stream_with_its_reason(make_pipeline, chunks):
    """max_restarts=1: the second kill fails the stream; both FFmpegs reaped; what the two
    runs wrote stays a valid VOD."""
    pipeline = make_pipeline(window=4.0, max_restarts=1)
    out = pipeline.output_dir
    await feed_paced(pipeline, chunks, speed=4.0, order=range(12))
    await wait_for(lambda: pipeline.stats()["segments"] >= 1)
    first = pipeline.pid
    os.kill(first, signal.SIGKILL)
    await wait_for(lambda: pipeline.pid != first)
    second = pipeline.pid
    for seq in range(12, len(chunks)):
        await pipeline.feed(seq, chunks[seq].data, wait=10)
        await asyncio.sleep(0.1)
    await wait_for(lambda: list(out.glob("run1/chunk-stream0-*.m4s")))
    os.kill(second, signal.SIGKILL)
    async with asyncio.timeout(10):
        assert await pipeline.wait_closed() == PipelineState.FAILED
    assert pipeline.reason == "encoder failed again after 1 restarts"
    assert "killed by signal 9" in pipeline.failure_detail
    assert_reaped(first)
    assert_reaped(second)
    check_stitched_vod(out, runs=2)
