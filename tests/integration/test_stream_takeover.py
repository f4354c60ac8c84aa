"""The process running a live stream killed (``kill -9``): another process sharing its
database and MEDIA_ROOT takes the stream over once the lease expires, or ends it clearly.

Two real Daphne processes (one SQLite file, one MEDIA_ROOT) and the real FFmpeg. While the
owner lives (chunks or not) the other answers ``409 wrong-process`` with ``retry_after``;
after the kill, the publisher's retries (as publisher.js does them: same chunk, after
``retry_after``) are taken within a lease, the stream continues in ``run1/`` with a
discontinuity, and its end is a valid VOD. The reclaim time (kill → first chunk taken by
the other process) and the gap (kill → first new segment) are printed: figures, not
thresholds.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import m3u8
import pytest

from tests.support.ingest import (
    clip_chunks,
    media_dir,
    new_stream,
    post_chunk,
    stop_http,
    stream_status,
)
from tests.support.media import check_stitched_vod

pytestmark = pytest.mark.timeout(180)

LEASE = 4  # STREAM_OWNER_LEASE: renewed every 4/3 s
ENV = {
    "STREAM_OWNER_LEASE": str(LEASE),
    "STREAM_LIVE_WINDOW_SECONDS": "4",
    "STREAM_IDLE_TIMEOUT": "60",
    "STREAM_RATE_LIMIT": "40",
}
ELSEWHERE_RETRIES = 3  # publisher.js: "wrong-process" retried this many times in a row


@pytest.fixture(scope="module")
def chunks(request, tmp_path_factory):
    return clip_chunks(request, tmp_path_factory, seconds=12)


def two_processes(daphne_factory):
    first = daphne_factory(ENV)
    shared = {
        **ENV,
        "SQLITE_PATH": str(first.workdir / "db.sqlite3"),
        "MEDIA_ROOT": str(first.workdir / "media"),
    }
    return first, daphne_factory(shared, migrate=False)


def wait_until(predicate, within: float = 30.0):
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def publish(server, slug, key, chunks, seqs, started: float) -> None:
    """Chunks at 1x real time from ``started`` (late ones at once, as a queue drains)."""
    for seq in seqs:
        time.sleep(max(0.0, started + chunks[seq].end_ms / 1000 - time.monotonic()))
        status, body = post_chunk(server, slug, key, seq, chunks[seq].data)
        assert status == 202, (seq, status, body)


def no_ffmpeg_left(out: Path) -> None:
    """No process (running or zombie) still names the stream's folder."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert str(out).encode() not in cmdline, (pid, cmdline[:200])


def test_killed_owner_process_stream_is_taken_over_and_carries_on(daphne_factory, chunks, capsys):
    first, second = two_processes(daphne_factory)
    slug, key = new_stream(first, "Takeover")
    out = media_dir(first, slug)
    started = time.monotonic()
    publish(first, slug, key, chunks, range(12), started)
    wait_until(lambda: len(list(out.glob("chunk-stream0-*.m4s"))) >= 2)

    # The owner holds its lease with no chunk coming: the other process refuses, and says
    # when to come back.
    time.sleep(LEASE + 1)
    status, body = post_chunk(second, slug, key, 12, chunks[12].data)
    assert (status, body["error"]) == (409, "wrong-process"), body
    assert 1 <= body["retry_after"] <= LEASE
    started += LEASE + 1
    publish(first, slug, key, chunks, range(12, 20), started)
    before = len(list(out.glob("chunk-stream0-*.m4s")))

    new_segment: list[float] = []

    def watch_run1() -> None:  # while chunks are posted: when the first new segment lands
        while not new_segment and time.monotonic() < killed + 120:
            if list(out.glob("run1/chunk-stream0-*.m4s")):
                new_segment.append(time.monotonic())
            time.sleep(0.01)

    killed = time.monotonic()
    first.kill()
    watcher = threading.Thread(target=watch_run1, daemon=True)
    watcher.start()
    uptime = Path("/proc/loadavg").read_text().split()[:3]
    seq, refusals = 20, 0
    while True:  # the publisher's retries of the same chunk
        status, body = post_chunk(second, slug, key, seq, chunks[seq].data)
        if status == 202:
            break
        assert (status, body["error"]) == (409, "wrong-process"), body
        assert 1 <= body["retry_after"] <= LEASE
        refusals += 1
        assert refusals <= ELSEWHERE_RETRIES, "not taken over within the publisher's retries"
        time.sleep(body["retry_after"])
    taken = time.monotonic()
    started = taken - chunks[seq].end_ms / 1000
    publish(second, slug, key, chunks, range(seq + 1, len(chunks) - 8), started)
    watcher.join(timeout=60)
    assert new_segment, "no segment from the new encoder"

    wait_until(lambda: "run1/chunk-stream0-" in (out / "media_0.m3u8").read_text())
    live = m3u8.load(str(out / "media_0.m3u8"))
    assert not live.is_endlist
    assert live.media_sequence + len(live.segments) - 1 > before  # numbered on
    assert any(s.discontinuity for s in live.segments) or live.discontinuity_sequence == 1
    assert stream_status(second, slug)["status"] == "live"
    publish(second, slug, key, chunks, range(len(chunks) - 8, len(chunks)), started)

    status, body = stop_http(second, slug, key)
    assert (status, body["state"]) == (200, "ended"), body
    counts = check_stitched_vod(out, runs=2)
    assert counts[0] > before
    info = stream_status(second, slug)
    assert info["status"] == "ended" and info["segments"] == counts[0], info
    no_ffmpeg_left(out)
    with capsys.disabled():
        print(
            f"\n[takeover] lease {LEASE} s: kill → first chunk taken by the other process "
            f"{taken - killed:.2f} s ({refusals} refusals), kill → first new segment "
            f"{new_segment[0] - killed:.2f} s; load {' '.join(uptime)}"
        )


def test_stop_after_the_owner_died_ends_the_stream_from_what_is_on_disk(daphne_factory, chunks):
    first, second = two_processes(daphne_factory)
    slug, key = new_stream(first, "Ended elsewhere")
    out = media_dir(first, slug)
    publish(first, slug, key, chunks, range(16), time.monotonic() - 2)
    wait_until(lambda: len(list(out.glob("chunk-stream0-*.m4s"))) >= 2)
    first.kill()
    status, body = stop_http(second, slug, key)
    assert (status, body["error"]) == (409, "wrong-process"), body  # the lease still runs
    time.sleep(body["retry_after"])
    status, body = stop_http(second, slug, key)
    assert (status, body["state"]) == (200, "ended"), body
    check_stitched_vod(out, runs=1)
    info = stream_status(second, slug)
    assert info["status"] == "ended" and info["reason"] == "stopped by the publisher", info
    status, body = post_chunk(second, slug, key, 16, chunks[16].data)
    assert (status, body["error"]) == (409, "closed"), body
    no_ffmpeg_left(out)
