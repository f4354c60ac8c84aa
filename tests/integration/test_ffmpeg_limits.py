"""Every FFmpeg child is bounded: memory, CPU priority, OOM score; always reaped.

Read from the kernel for the running children of the real pipeline (plain and with the face
overlay, whose two FFmpegs go through the same ``streaming.ffmpeg.spawn``): the address-space
limit in ``/proc/<pid>/limits``, the niceness, ``/proc/<pid>/oom_score_adj``. A limit too
small for the encode fails the stream with a clear public reason; no zombie is left.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from streaming.ffmpeg import ChildLimits, EncoderOptions
from streaming.pipeline import PipelineConfig, PipelineState, StreamClosed, StreamPipeline
from tests.support.ingest import media_cache
from tests.support.media import cached_webm, mediarecorder_chunks

pytestmark = pytest.mark.timeout(180)

LIMITS = ChildLimits(memory_mb=2048, nice=10, oom_score_adj=500)
# Enough to exec FFmpeg, far too little to decode and encode 640x480 (a 720p + 360p run
# peaks near 510 MiB of address space, docs/decisions.md).
TINY_MB = 150


@pytest.fixture(scope="module")
def chunks(request, tmp_path_factory) -> list[bytes]:
    clip = cached_webm(media_cache(request, tmp_path_factory), seconds=3, size="640x480", fps=30)
    return [c.data for c in mediarecorder_chunks(clip, 250)]


def make_pipeline(tmp_path: Path, limits: ChildLimits, face_overlay: bool) -> StreamPipeline:
    encoder = EncoderOptions.from_settings(segment_seconds=1.0, live_window_seconds=0)
    config = PipelineConfig.from_settings(
        encoder=encoder, limits=limits, face_overlay=face_overlay, idle_timeout=None
    )
    return StreamPipeline(tmp_path / "stream", config)


def ffmpeg_pids(pipeline: StreamPipeline) -> list[int]:
    process = pipeline.process
    if pipeline.config.face_overlay:
        return [process.decoder.pid, process.encoder.pid]
    return [process.pid]


def address_space_limit(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError(f"no address space line in /proc/{pid}/limits")


def read_int(path: str) -> int:
    return int(Path(path).read_text())


def thread_nices(pid: int) -> set[int]:
    """The niceness of every thread of ``pid`` (FFmpeg starts its threads after exec)."""
    return {os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # waited for already: not our child any more


def zombie_children() -> list[str]:
    """Children of this test process in state Z (exited, never waited for)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and state == "Z":
            found.append(stat)
    return found


@pytest.mark.parametrize("face_overlay", [False, True], ids=["plain", "overlay"])
async def test_running_ffmpeg_children_are_bounded(tmp_path, chunks, face_overlay):
    pipeline = make_pipeline(tmp_path, LIMITS, face_overlay)
    try:
        for seq, chunk in enumerate(chunks[:4]):
            await pipeline.feed(seq, chunk, wait=10)
        assert pipeline.state == PipelineState.LIVE
        niced = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
        own_oom = read_int("/proc/self/oom_score_adj")
        for pid in ffmpeg_pids(pipeline):
            assert address_space_limit(pid) == (str(2048 << 20),) * 2
            assert thread_nices(pid) == {niced}
            assert read_int(f"/proc/{pid}/oom_score_adj") == max(own_oom, 500)
        assert await pipeline.stop() == PipelineState.ENDED, pipeline.failure_detail
    finally:
        await pipeline.abort("test teardown")
    assert zombie_children() == []


@pytest.mark.parametrize("face_overlay", [False, True], ids=["plain", "overlay"])
async def test_a_child_over_its_memory_limit_fails_the_stream_without_a_zombie(
    tmp_path, chunks, face_overlay
):
    limits = ChildLimits(memory_mb=TINY_MB, nice=10, oom_score_adj=500)
    pipeline = make_pipeline(tmp_path, limits, face_overlay)
    async with asyncio.timeout(60):
        try:
            for seq, chunk in enumerate(chunks):
                await pipeline.feed(seq, chunk, wait=10)
                await asyncio.sleep(0.05)
            await pipeline.stop()
        except StreamClosed:
            pass
        assert await pipeline.wait_closed() == PipelineState.FAILED
    assert pipeline.reason == "encoder failed"  # public and short
    assert f"(memory limit {TINY_MB} MiB)" in pipeline.failure_detail  # for staff
    assert zombie_children() == []
    for pid in ffmpeg_pids(pipeline):
        assert_reaped(pid)
