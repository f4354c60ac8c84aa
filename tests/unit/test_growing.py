"""streaming/growing.py: which segment names may be waited for, from the files on disk only."""

from __future__ import annotations

import os
import time

import pytest
from django.test import RequestFactory

from streaming import follow
from streaming.growing import Segment, locate, segment_name, serve, state
from streaming.lowlatency import LowLatency, write_mode

MODE = LowLatency(part_target=0.2, segment_target=1.0)


def touch(path, age: float = 0.0) -> None:
    path.write_bytes(b"x")
    when = time.time() - age
    os.utime(path, (when, when))


def test_states(tmp_path):
    for number in (1, 2):
        touch(tmp_path / segment_name("0", number), age=5)
    touch(tmp_path / f"{segment_name('0', 3)}.tmp")

    def at(number: int, rep: str = "0"):
        return state(Segment(tmp_path, rep, number, MODE))

    assert at(2) == "final"
    assert at(3) == "writing"
    assert at(4) == "next"  # opens when 3 closes
    assert at(5) is None  # two ahead: 404 at once
    assert at(0) is None
    assert at(1, rep="1") == "next"  # a rung with nothing yet: its first segment may come
    (tmp_path / segment_name("0", 1)).unlink()
    assert at(1) is None  # long gone (2 exists)

    # 3 closed just now, 4's .tmp not created yet: 4 is next.
    os.rename(tmp_path / f"{segment_name('0', 3)}.tmp", tmp_path / segment_name("0", 3))
    assert at(4) == "next"
    # ... and long ago: the encoder stopped, nothing more comes.
    touch(tmp_path / segment_name("0", 3), age=5)
    assert at(4) is None


def test_locate_only_in_low_latency_folders(tmp_path):
    assert locate(tmp_path, tmp_path, "chunk-stream0-00003.m4s") is None  # standard folder
    write_mode(tmp_path, MODE)
    run = tmp_path / "run1"
    found = locate(tmp_path, run, "chunk-stream2-00003.m4s")
    assert found == Segment(run, "2", 3, MODE)
    for name in ("chunk-stream0-3.m4s", "init-stream0.m4s", "chunk-stream0-00003.m4s.tmp"):
        assert locate(tmp_path, tmp_path, name) is None, name


def test_segment_one_scrolled_out_of_the_window_is_gone(tmp_path):
    """Segments 1 and 2 deleted by retention, 3 on: 1 is 404 at once, not held. At the
    stream's start (its init segment just written, segment 1 not opened yet) it is next."""
    touch(tmp_path / "init-stream0.m4s")
    first = Segment(tmp_path, "0", 1, MODE)
    assert state(first) == "next"
    touch(tmp_path / "init-stream0.m4s", age=60)
    touch(tmp_path / segment_name("0", 3), age=5)
    touch(tmp_path / f"{segment_name('0', 4)}.tmp")
    assert state(first) is None


# --- serve(): requests as media.py passes them ------------------------------------------
STYP = b"\0\0\0\x18stypmsdh\0\0\0\0msdhmsix"


def fragment(payload: bytes) -> bytes:
    """A moof (empty: streaming.fmp4 reads what it finds) and its mdat."""
    return b"\0\0\0\x08moof" + (8 + len(payload)).to_bytes(4, "big") + b"mdat" + payload


@pytest.fixture
def writing(tmp_path, settings):
    """Segment 3 being written: styp, one whole fragment, the first bytes of the next."""
    settings.STREAM_LL_HELD_PER_CLIENT = 0
    write_mode(tmp_path, MODE)
    for number in (1, 2):
        touch(tmp_path / segment_name("0", number), age=0.5)
    whole = STYP + fragment(b"a" * 100)
    (tmp_path / f"{segment_name('0', 3)}.tmp").write_bytes(whole + fragment(b"b" * 100)[:30])
    return Segment(tmp_path, "0", 3, MODE), whole


def request(method: str = "GET", **headers: str):
    return getattr(RequestFactory(), method.lower())("/media/streams/live/x.m4s", headers=headers)


async def body_of(response) -> bytes:
    try:
        return b"".join([part async for part in response.streaming_content])
    finally:
        response.close()


async def test_a_range_with_too_many_digits_is_ignored(writing, monkeypatch):
    segment, _ = writing
    monkeypatch.setattr(follow, "wait_for", no_inotify)  # the followed body ends at once
    huge = "9" * 5000
    for header in (
        f"bytes={huge}-",
        f"bytes=0-{huge}",
        f"bytes=-{huge}",
        "bytes=1234567890123456-",
    ):
        response = await serve(request(Range=header), segment)
        assert response.status_code == 200, header  # no range: the segment, followed
        assert "Content-Range" not in response
        await body_of(response)


async def no_inotify(*args, **kwargs):
    raise follow.FollowUnavailable("inotify_add_watch: No space left on device")


async def test_no_inotify_is_503_before_a_body_and_ends_a_body_at_a_whole_fragment(
    writing, monkeypatch
):
    segment, whole = writing
    monkeypatch.setattr(follow, "wait_for", no_inotify)
    for headers in ({"Range": "bytes=0-99999"}, {"Range": f"bytes={len(whole)}-"}, {}):
        waited = segment if headers else Segment(segment.folder, "0", 4, MODE)  # "next"
        response = await serve(request(**headers), waited)
        assert response.status_code == 503, headers
        assert response["Retry-After"] == "1"
        assert b"Cannot wait" in response.content
    # Followed: what is written now is sent (whole fragments), then the body ends.
    response = await serve(request(), segment)
    assert response.status_code == 200
    assert await body_of(response) == whole


async def test_a_followed_body_holds_back_an_incomplete_fragment(writing):
    segment, whole = writing
    tmp = segment.tmp
    response = await serve(request(), segment)
    parts = aiter(response.streaming_content)
    try:
        assert await anext(parts) == b""  # the headers at once
        assert await anext(parts) == whole  # not the 30 bytes of the next fragment
        rest = fragment(b"b" * 100)
        with tmp.open("ab") as out:
            out.write(rest[30:] + fragment(b"c" * 10)[:5])
        assert await anext(parts) == rest
        with tmp.open("ab") as out:
            out.write(fragment(b"c" * 10)[5:])
        os.rename(tmp, segment.final)  # closed: the rest, whatever it is
        assert await anext(parts) == fragment(b"c" * 10)
        with pytest.raises(StopAsyncIteration):
            await anext(parts)
    finally:
        response.close()


async def test_open_ranges_are_not_cached_closed_ones_are(writing):
    segment, whole = writing
    response = await serve(request(Range="bytes=0-"), segment)
    assert response.status_code == 206 and response.content == whole
    assert response["Cache-Control"] == "no-cache"
    assert response["Content-Range"] == f"bytes 0-{len(whole) - 1}/*"
    response = await serve(request(Range="bytes=0-99"), segment)
    assert response.status_code == 206 and response.content == whole[:100]
    assert response["Cache-Control"] == "public, max-age=31536000, immutable"


async def test_head_of_an_incomplete_segment_waits_for_it(writing, monkeypatch):
    segment, _ = writing
    waits = []

    async def completes(directory, check, within):
        waits.append(within)
        os.rename(segment.tmp, segment.final)
        return await check()

    monkeypatch.setattr(follow, "wait_for", completes)
    # Complete now: None, media.py answers with the file's length.
    assert await serve(request("HEAD"), segment) is None
    assert waits == [segment.within]
    # Never written in time: 503, not 200.
    stalled = Segment(segment.folder, "0", 4, MODE)

    async def times_out(directory, check, within):
        return None

    monkeypatch.setattr(follow, "wait_for", times_out)
    response = await serve(request("HEAD"), stalled)
    assert response.status_code == 503
