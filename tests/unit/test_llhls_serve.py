"""streaming.llhls_serve: shared reads of a live edge, blocking reload on real files.

A live folder is rebuilt from a finished real FFmpeg encode: the playlists cut to three
segments, the fourth segment a ``.tmp`` holding its first two fragments; the test then
writes the rest of it as the encoder would, and held requests wake on inotify.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from django.test import RequestFactory

from streaming import follow, llhls_serve
from streaming.fmp4 import fragments
from streaming.lowlatency import LowLatency, write_mode
from tests.support import llhls_check
from tests.support.ll_stream import finished_encode, live_playlist

MODE = LowLatency(part_target=0.2, segment_target=1.0)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> Path:
    return finished_encode(tmp_path_factory.mktemp("ll") / "show")


@pytest.fixture
def live(encoded, tmp_path) -> Path:
    """Segments 1-3 listed, segment 4 being written (two fragments so far)."""
    folder = tmp_path / "show"
    folder.mkdir()
    for name in ("master.m3u8", "clock.json"):
        shutil.copy(encoded / name, folder / name)
    write_mode(folder, MODE)
    for rep in (0, 1, 2):
        shutil.copy(encoded / f"init-stream{rep}.m4s", folder)
        for number in (1, 2, 3):
            shutil.copy(encoded / f"chunk-stream{rep}-{number:05d}.m4s", folder)
        text = (encoded / f"media_{rep}.m3u8").read_text()
        (folder / f"media_{rep}.m3u8").write_text(live_playlist(text, 3))
        data = (encoded / f"chunk-stream{rep}-00004.m4s").read_bytes()
        found, _ = fragments(data)
        (folder / f"chunk-stream{rep}-00004.m4s.tmp").write_bytes(data[: found[2].offset])
    return folder


def write_atomic(path: Path, text: str) -> None:
    """As the encoder and streaming/runs.py replace a playlist: write aside, rename over."""
    aside = path.with_name(path.name + ".tmp")
    aside.write_text(text)
    os.replace(aside, path)


@pytest.fixture
def restarted(encoded, tmp_path) -> Path:
    """A stream restarted once (rendition 0): run 0's segments 1-2 in the stream folder,
    run 1's segments 1-3 in ``run1/`` and its segment 4 being written (two fragments); the
    top-level playlist stitched as streaming/runs.py writes it (msn 1-5, msn 6 written)."""
    folder = tmp_path / "show"
    run = folder / "run1"
    run.mkdir(parents=True)
    for name in ("master.m3u8", "clock.json"):
        shutil.copy(encoded / name, folder / name)
    shutil.copy(encoded / "clock.json", run / "clock.json")
    write_mode(folder, MODE)
    shutil.copy(encoded / "init-stream0.m4s", folder)
    shutil.copy(encoded / "init-stream0.m4s", run)
    for number in (1, 2):
        shutil.copy(encoded / f"chunk-stream0-{number:05d}.m4s", folder)
    for number in (1, 2, 3):
        shutil.copy(encoded / f"chunk-stream0-{number:05d}.m4s", run)
    data = (encoded / "chunk-stream0-00004.m4s").read_bytes()
    found, _ = fragments(data)
    (run / "chunk-stream0-00004.m4s.tmp").write_bytes(data[: found[2].offset])
    write_atomic(folder / "media_0.m3u8", stitched(encoded))
    return folder


def stitched(encoded: Path, *, ended: bool = False) -> str:
    """The top-level playlist of ``restarted`` (``ended``: the final one, run 1's four
    segments, ``EXT-X-ENDLIST``)."""
    durations = [
        line
        for line in (encoded / "media_0.m3u8").read_text().splitlines()
        if line.startswith("#EXTINF")
    ]
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:1", "#EXT-X-MEDIA-SEQUENCE:1"]
    lines.append('#EXT-X-MAP:URI="init-stream0.m4s"')
    for number in (1, 2):
        lines += [durations[number - 1], f"chunk-stream0-{number:05d}.m4s"]
    lines += ["#EXT-X-DISCONTINUITY", '#EXT-X-MAP:URI="run1/init-stream0.m4s"']
    for number in (1, 2, 3, 4) if ended else (1, 2, 3):
        lines += [durations[number - 1], f"run1/chunk-stream0-{number:05d}.m4s"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


async def test_concurrent_readers_share_reads_and_text(live):
    stream = llhls_serve._stream(live, MODE)
    snapshots = await asyncio.gather(*(stream.fresh() for _ in range(50)))
    # Two reads at most (the first, and one after it for those who came meanwhile); the
    # second found the same state, so everyone shares one snapshot and one rendered text.
    assert len({id(s) for s in snapshots}) == 1
    assert len({id(s.text(0, None)) for s in snapshots}) == 1
    playlist = llhls_check.parse(snapshots[-1].text(0, None).decode())
    assert llhls_check.check_playlist(playlist) == []
    assert playlist.last_part == (4, 1)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def request(**query: str):
    return RequestFactory().get("/media/streams/show/media_0.m3u8", query)


async def serve(folder: Path, **query: str):
    return await llhls_serve.serve_playlist(
        request(**query), folder / "media_0.m3u8", "media_0.m3u8", MODE
    )


async def test_blocking_request_wakes_when_the_part_is_written(live, encoded):
    data = (encoded / "chunk-stream0-00004.m4s").read_bytes()
    found, _ = fragments(data)

    tmp = live / "chunk-stream0-00004.m4s.tmp"

    async def encoder():  # the encoder's pace (the request waits on the file, not on this)
        await asyncio.sleep(0.2)
        append(tmp, data[found[2].offset : found[2].offset + 100])  # not complete yet
        await asyncio.sleep(0.2)
        append(tmp, data[found[2].offset + 100 : found[3].offset])

    task = asyncio.create_task(encoder())
    response = await serve(live, _HLS_msn="4", _HLS_part="2")
    await task
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("public, max-age=")
    answer = llhls_check.parse(response.content.decode())
    assert answer.has_part(4, 2) and llhls_check.check_playlist(answer) == []


async def test_part_past_a_segments_end_is_part_zero_of_the_next(live, encoded):
    """hls.js asks (4, 5) after part 4.4: answered when segment 5 has its first part."""
    tmp = live / "chunk-stream0-00004.m4s.tmp"
    final = (encoded / "chunk-stream0-00004.m4s").read_bytes()
    following = (encoded / "chunk-stream0-00005.m4s").read_bytes()
    first, _ = fragments(following)

    async def encoder():  # the encoder's pace (the request waits on the files, not on this)
        await asyncio.sleep(0.2)
        tmp.write_bytes(final)
        tmp.rename(live / "chunk-stream0-00004.m4s")  # segment 4 closes (not listed yet)
        await asyncio.sleep(0.2)
        (live / "chunk-stream0-00005.m4s.tmp").write_bytes(following[: first[0].length])

    task = asyncio.create_task(encoder())
    response = await serve(live, _HLS_msn="4", _HLS_part="5")
    await task
    assert response.status_code == 200
    answer = llhls_check.parse(response.content.decode())
    assert answer.segments[-1].msn == 4  # listed by us: the playlist file still says 3
    assert answer.has_part(5, 0) and llhls_check.check_playlist(answer) == []


async def test_bad_and_far_requests_are_refused_at_once(live):
    for query in ({"_HLS_part": "1"}, {"_HLS_msn": "x"}, {"_HLS_msn": "9", "_HLS_part": "0"}):
        response = await serve(live, **query)
        assert response.status_code == 400 and response["Cache-Control"] == "no-store"
        assert response.content.strip()


async def test_a_request_the_encoder_never_reaches_gets_503(live, settings):
    response = await serve(live, _HLS_msn="5", _HLS_part="0")  # nothing more is written
    assert response.status_code == 503
    assert response["Retry-After"] == "1"


async def test_held_requests_over_the_client_limit_get_429(live, settings):
    settings.STREAM_LL_HELD_PER_CLIENT = 2
    held = [asyncio.create_task(serve(live, _HLS_msn="5", _HLS_part="0")) for _ in range(2)]
    # Until both hold (the counter has no event to wait on: a condition, not a fixed wait).
    while llhls_serve.held_requests().held < 2:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    refused = await serve(live, _HLS_msn="5", _HLS_part="0")
    assert refused.status_code == 429 and refused["Retry-After"]
    plain = await serve(live)  # not held: answered at once
    assert plain.status_code == 200
    for task in held:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    assert llhls_serve.held_requests().held == 0  # released when the client goes


def same_vod(served: str, final: str) -> bool:
    """``served`` is the final playlist (with its PDT tags, as every playlist is served)."""
    answer, written = llhls_check.parse(served), llhls_check.parse(final)
    uris = [segment.uri for segment in answer.segments]
    return answer.ended and not answer.parts and uris == [s.uri for s in written.segments]


async def held_until_the_end(folder: Path, final: str, **query: str):
    """A held request, then the stream ends (its final playlist written at top level): the
    request is answered with that playlist. The bound is made long (100 s) so that only the
    end can answer it within the test's guard."""
    task = asyncio.create_task(serve(folder, **query))
    while llhls_serve.held_requests().held < 1 and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert not task.done()  # held
    write_atomic(folder / "media_0.m3u8", final)
    return await asyncio.wait_for(task, 30)


async def test_a_held_request_is_answered_with_the_final_playlist_when_the_stream_ends(
    live, encoded, monkeypatch
):
    monkeypatch.setattr(llhls_serve, "WAIT_TARGETS", 100)
    final = (encoded / "media_0.m3u8").read_text()
    response = await held_until_the_end(live, final, _HLS_msn="5", _HLS_part="0")
    assert response.status_code == 200 and same_vod(response.content.decode(), final)


async def test_a_restarted_stream_serves_its_run_and_held_requests_wake_on_either_folder(
    restarted, encoded, monkeypatch
):
    """After a restart the parts are written in ``run1/`` and the playlists (the final one
    included) in the stream folder: a held request wakes on both."""
    monkeypatch.setattr(llhls_serve, "WAIT_TARGETS", 100)
    plain = llhls_check.parse((await serve(restarted)).content.decode())
    assert llhls_check.check_playlist(plain) == []
    assert plain.last_part == (6, 1) and plain.current[0].uri == "run1/chunk-stream0-00004.m4s"

    data = (encoded / "chunk-stream0-00004.m4s").read_bytes()
    found, _ = fragments(data)

    async def encoder():  # run 1 writes its next part (the request waits on the file)
        await asyncio.sleep(0.2)
        append(
            restarted / "run1" / "chunk-stream0-00004.m4s.tmp",
            data[found[2].offset : found[3].offset],
        )

    task = asyncio.create_task(encoder())
    response = await asyncio.wait_for(serve(restarted, _HLS_msn="6", _HLS_part="2"), 30)
    await task
    assert response.status_code == 200
    assert llhls_check.parse(response.content.decode()).has_part(6, 2)

    final = stitched(encoded, ended=True)
    response = await held_until_the_end(restarted, final, _HLS_msn="6", _HLS_part="4")
    assert response.status_code == 200 and same_vod(response.content.decode(), final)


async def test_held_requests_over_the_process_limit_get_503(live, settings):
    settings.STREAM_LL_HELD_PER_CLIENT = 10
    settings.STREAM_LL_HELD_MAX = 2
    held = [asyncio.create_task(serve(live, _HLS_msn="5", _HLS_part="0")) for _ in range(2)]
    while llhls_serve.held_requests().held < 2:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    refused = await serve(live, _HLS_msn="5", _HLS_part="0")
    assert refused.status_code == 503 and refused["Retry-After"] == "1"
    assert b"Too many held" in refused.content and refused["Cache-Control"] == "no-store"
    assert (await serve(live)).status_code == 200  # not held: answered at once
    for task in held:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    assert llhls_serve.held_requests().held == 0


async def test_a_request_that_cannot_wait_gets_503(live, monkeypatch):
    """inotify unavailable (its per-user limits reached, or not Linux): 503, not a 500."""

    def unavailable():
        raise follow.FollowUnavailable("inotify_init1: Too many open files")

    monkeypatch.setattr(follow, "follower", unavailable)
    response = await serve(live, _HLS_msn="5", _HLS_part="0")
    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert b"Cannot wait for this stream" in response.content
    assert (await serve(live, _HLS_msn="4", _HLS_part="1")).status_code == 200  # no wait
    assert llhls_serve.held_requests().held == 0
