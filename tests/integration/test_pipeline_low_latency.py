"""The live pipeline in low-latency mode with the real FFmpeg, fed like a 100 ms MediaRecorder.

The clip is tests/integration/test_pipeline.py's (testsrc2 640x480 30 fps + tone, VP8 +
Opus WebM), cut into 100 ms chunks and fed in real time. What the origin relies on:

* ``low-latency.json`` is in the stream folder before FFmpeg writes anything;
* each segment grows on disk as ``<segment>.m4s.tmp`` one fragment (part) at a time, seen
  with fewer fragments than a whole segment before it is renamed;
* every finished video segment is 1 s of fragments of exactly the part target, the first
  one independent (a keyframe) and no other; audio fragments are about a part long;
* the playlists stay valid with 1 s segments (target duration, the VOD at the end);
* a killed encoder restarts in low-latency mode (run1/ written the same way), the killed
  run's unfinished ``.tmp`` is dropped and the stitched playlists are a valid VOD.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import m3u8
import pytest

from streaming import fmp4
from streaming.ffmpeg import EncoderOptions
from streaming.lowlatency import MODE_FILE, LowLatency, read_mode
from streaming.pipeline import PipelineConfig, PipelineState, StreamPipeline
from streaming.playlists import fix_target_duration
from tests.support.ingest import media_cache
from tests.support.media import TimedChunk, cached_webm, check_stitched_vod, mediarecorder_chunks

pytestmark = pytest.mark.timeout(120)

PART = 0.2
SEGMENT = 1.0
MODE = LowLatency(part_target=PART, segment_target=SEGMENT)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory, request) -> Path:
    return media_cache(request, tmp_path_factory)


@pytest.fixture(scope="session")
def chunks(clip_dir) -> list[TimedChunk]:
    clip = cached_webm(clip_dir, seconds=8, size="640x480", fps=30)
    return mediarecorder_chunks(clip, timeslice_ms=100)


@pytest.fixture
async def make_pipeline(tmp_path):
    made: list[StreamPipeline] = []

    def make(**overrides) -> StreamPipeline:
        encoder = EncoderOptions.from_settings(
            segment_seconds=SEGMENT, part_seconds=PART, live_window_seconds=4
        )
        config = PipelineConfig.from_settings(encoder=encoder, **overrides)
        pipeline = StreamPipeline(tmp_path / f"ll{len(made)}", config)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        if not pipeline.closed:
            await pipeline.abort("test teardown")


class Watcher:
    """Notes, while the stream is live, what the origin would see: the mode file when the
    encoder's first file appears, and each growing ``.tmp``'s complete fragment counts."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.mode_at_first_file: LowLatency | str | None = "not seen"
        self.growth: dict[str, set[int]] = {}  # .tmp name → complete fragment counts seen
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(self._scan)
            await asyncio.sleep(0.01)  # a test's own poll of the folder (no event to wait on)

    def _scan(self) -> None:
        folders = [self.folder, *sorted(self.folder.glob("run*/"))] if self.folder.exists() else []
        for folder in folders:
            for entry in os.scandir(folder):
                if self.mode_at_first_file == "not seen" and entry.name.startswith("init-"):
                    self.mode_at_first_file = read_mode(self.folder)
                if entry.name.startswith("chunk-stream0-") and entry.name.endswith(".tmp"):
                    try:
                        data = Path(entry.path).read_bytes()
                    except FileNotFoundError:
                        continue  # renamed since the listing
                    key = f"{folder.name}/{entry.name}"
                    self.growth.setdefault(key, set()).add(len(fmp4.fragments(data)[0]))

    def stop(self) -> None:
        self.task.cancel()


async def feed_real_time(pipeline, chunks, seqs) -> None:
    """Chunks at their media time, like a camera (the test's clock, not a wait)."""
    seqs = list(seqs)
    start = time.monotonic() - chunks[seqs[0] - 1].end_ms / 1000 if seqs[0] else time.monotonic()
    for seq in seqs:
        await asyncio.sleep(max(0.0, start + chunks[seq].end_ms / 1000 - time.monotonic()))
        reply = await pipeline.feed(seq, chunks[seq].data, wait=10)
        assert reply.status in ("accepted", "held"), reply


async def wait_for(predicate, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def check_fragments(folder: Path, reps: int) -> int:
    """Every finished segment: video fragments of exactly the part target, the first one
    independent and only it; audio fragments about a part. Returns the segments checked."""
    checked = 0
    for rep in range(reps + 1):
        timescale = fmp4.init_timescale((folder / f"init-stream{rep}.m4s").read_bytes())
        segments = sorted(folder.glob(f"chunk-stream{rep}-*.m4s"))
        assert len(segments) >= 2, (rep, segments)
        for path in segments[:-1]:  # the last one may be cut short by the stop
            fragments, end = fmp4.fragments(path.read_bytes())
            assert end == path.stat().st_size, path.name  # the fragments tile the file
            seconds = [f.duration / timescale for f in fragments]
            if rep < reps:  # video: 6 frames each at 30 fps
                assert seconds == [PART] * round(SEGMENT / PART), (path.name, seconds)
                independent = [f.independent for f in fragments]
                assert independent == [True] + [False] * (len(fragments) - 1), path.name
            else:  # audio: 10 AAC frames (0.2133 s), the last of a segment shorter
                assert all(0 < s <= PART + 0.03 for s in seconds), (path.name, seconds)
                assert abs(sum(seconds) - SEGMENT) < 0.05, (path.name, seconds)
            checked += 1
    return checked


def check_playlist_targets(folder: Path) -> None:
    """FFmpeg's media playlists as served (``fix_target_duration``): a valid target."""
    for path in folder.glob("media_*.m3u8"):
        playlist = m3u8.loads(fix_target_duration(path.read_text()))
        longest = max(s.duration for s in playlist.segments)
        assert playlist.target_duration >= max(1, round(longest)), (path.name, longest)


async def test_low_latency_stream_writes_parts_as_they_are_encoded(make_pipeline, chunks):
    pipeline = make_pipeline()
    out = pipeline.output_dir
    watcher = Watcher(out)
    try:
        await feed_real_time(pipeline, chunks, range(len(chunks) - 10))
        await wait_for(lambda: pipeline.stats()["segments"] >= 5)
        live_playlists = {p.name: p.read_text() for p in out.glob("media_*.m3u8")}
        check_playlist_targets(out)
        await feed_real_time(pipeline, chunks, range(len(chunks) - 10, len(chunks)))
        state = await pipeline.stop()
    finally:
        watcher.stop()
    assert state == PipelineState.ENDED, (pipeline.reason, pipeline.failure_detail)

    assert watcher.mode_at_first_file == MODE  # there before the encoder's first file
    assert read_mode(out) == MODE
    # Segments were seen growing: part by part, before the whole segment was there.
    parts_per_segment = round(SEGMENT / PART)
    partial = [counts for counts in watcher.growth.values() if counts - {0, parts_per_segment}]
    assert len(partial) >= 3, watcher.growth
    assert any(len(counts - {0}) >= 2 for counts in partial), watcher.growth
    assert not list(out.glob("*.tmp")), list(out.glob("*.tmp"))  # all renamed at the end

    reps = len(pipeline.renditions)
    assert check_fragments(out, reps) >= 3 * (reps + 1)
    assert all("#EXT-X-ENDLIST" not in text for text in live_playlists.values())
    for rep in range(reps + 1):  # the VOD: every segment, ~1 s each, a valid target
        playlist = m3u8.load(str(out / f"media_{rep}.m3u8"))
        assert playlist.is_endlist and playlist.playlist_type == "vod"
        durations = [s.duration for s in playlist.segments]
        assert len(durations) == len(list(out.glob(f"chunk-stream{rep}-*.m4s")))
        assert all(abs(d - SEGMENT) < 0.05 for d in durations[1:-1]), durations
        assert playlist.target_duration >= max(1, round(max(durations)))


@pytest.mark.parametrize("face_overlay", [False, True], ids=["plain", "overlay"])
async def test_killed_low_latency_encoder_restarts_in_low_latency_mode(
    make_pipeline, chunks, face_overlay
):
    pipeline = make_pipeline(max_restarts=2, face_overlay=face_overlay)
    out = pipeline.output_dir
    watcher = Watcher(out)
    split = 30  # 3 s of 100 ms chunks
    try:
        await feed_real_time(pipeline, chunks, range(split))
        await wait_for(lambda: pipeline.stats()["segments"] >= 2)
        first = pipeline.process
        # The plain encoder, or the overlay chain's encoder (FFmpeg #2) that writes the files.
        os.kill(first.encoder.pid if face_overlay else first.pid, signal.SIGKILL)
        await feed_real_time(pipeline, chunks, range(split, len(chunks)))
        await wait_for(lambda: len(list(out.glob("run1/chunk-stream0-*.m4s"))) >= 2)
        assert pipeline.restarts == 1 and pipeline.state == PipelineState.LIVE
        live = m3u8.loads((out / "media_0.m3u8").read_text())  # stitched while run 1 is live
        assert not live.is_endlist and live.segments[-1].uri.startswith("run1/")
        state = await pipeline.stop()
    finally:
        watcher.stop()
    assert state == PipelineState.ENDED, (pipeline.reason, pipeline.failure_detail)
    assert read_mode(out) == MODE and not (out / "run1" / MODE_FILE).exists()
    # Run 1 wrote its segments part by part too, and left nothing unfinished; the killed
    # run's segment in progress was dropped.
    assert any(
        name.startswith("run1/") and counts - {0, 5} for name, counts in watcher.growth.items()
    )
    assert not list(out.glob("**/*.m4s.tmp"))
    reps = len(pipeline.renditions)
    check_fragments(out / "run1", reps)
    counts = check_stitched_vod(out, runs=2, reps=tuple(range(reps + 1)))
    assert pipeline.stats()["segments"] == counts[0], (pipeline.stats(), counts)
