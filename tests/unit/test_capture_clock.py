"""Parsing a publisher's capture clock (``capture_ms``): only an integer in range, or its
ASCII digits, is a clock; everything else is a ``ClockError`` (a clear 400 / ``bad-clock``),
never an exception from ``int()`` or float arithmetic."""

from __future__ import annotations

import math

import pytest

from streaming.clock import (
    CAPTURE_MS_MAX,
    MAX_CLOCK_FUTURE_MS,
    MAX_CLOCK_PAST_MS,
    ClockError,
    check_capture_ms,
    parse_capture_ms,
)

SERVER_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    "value, expected",
    [(SERVER_MS, SERVER_MS), (str(SERVER_MS), SERVER_MS), ("0", 0), (0, 0), ("007", 7)],
)
def test_integers_and_ascii_digits_are_clocks(value, expected):
    assert parse_capture_ms(value) == expected


BAD = [
    "²",  # "²".isdigit() is true, int("²") raises
    "¹²³",
    "١٢٣",  # Arabic-Indic digits: int() reads them as 123
    "\uff11\uff12\uff13",  # fullwidth digits
    " 12",
    "12 ",
    "12\n",
    "1_000",
    "+12",
    "-12",
    "1e3",
    "12.0",
    "0x1f",
    "",
    "NaN",
    "9" * 16,
    "9" * 5000,  # int() would refuse it with its own ValueError (str-to-int digit limit)
    10**400,  # a JSON integer this long overflowed the float in the range message
    CAPTURE_MS_MAX,
    -1,
    True,
    False,
    1.0,
    float(SERVER_MS),
    math.nan,
    math.inf,
    None,
    [SERVER_MS],
    {"ms": SERVER_MS},
    b"123",
]


@pytest.mark.parametrize("value", BAD, ids=lambda v: repr(v)[:24])
def test_anything_else_is_a_clock_error(value):
    with pytest.raises(ClockError) as exc:
        parse_capture_ms(value)
    assert "capture_ms" in str(exc.value)
    with pytest.raises(ClockError):
        check_capture_ms(value, SERVER_MS)


@pytest.mark.parametrize(
    "offset", [-MAX_CLOCK_PAST_MS, -1, 0, MAX_CLOCK_FUTURE_MS], ids=["oldest", "-1", "0", "newest"]
)
def test_a_clock_near_the_servers_is_believed(offset):
    assert check_capture_ms(str(SERVER_MS + offset), SERVER_MS) == SERVER_MS + offset


@pytest.mark.parametrize("offset", [-MAX_CLOCK_PAST_MS - 1, MAX_CLOCK_FUTURE_MS + 1, -SERVER_MS])
def test_a_clock_far_from_the_servers_is_refused_with_why(offset):
    with pytest.raises(ClockError, match="/streams/time/"):
        check_capture_ms(SERVER_MS + offset, SERVER_MS)


def test_anchored_playlist_is_read_again_for_each_new_version(tmp_path):
    """Cached per version: a playlist replaced by rename (as FFmpeg and the stitcher write
    them) or rewritten in place is read again; a missing one raises OSError."""
    from streaming.clock import read_anchored_playlist

    playlist = tmp_path / "media_0.m3u8"
    with pytest.raises(OSError):
        read_anchored_playlist(playlist)
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n")
    assert "#EXT-X-TARGETDURATION:1" in read_anchored_playlist(playlist)
    assert read_anchored_playlist(playlist) is read_anchored_playlist(playlist)  # cached
    replacement = tmp_path / "media_0.m3u8.tmp"
    replacement.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n")
    replacement.rename(playlist)
    assert "#EXT-X-TARGETDURATION:2" in read_anchored_playlist(playlist)
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXT-X-ENDLIST\n")
    assert read_anchored_playlist(playlist).endswith("#EXT-X-ENDLIST\n")


def test_a_playlist_with_a_segment_not_anchored_is_read_again(tmp_path):
    """A listed segment whose header cannot be read gets no PROGRAM-DATE-TIME: that text
    is not kept, so the next request anchors it once it can."""
    from streaming.clock import StreamClock, read_anchored_playlist, write_clock

    write_clock(tmp_path, StreamClock(1_000_000, "publisher"))
    playlist = tmp_path / "media_0.m3u8"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nchunk-stream0-00001.m4s\n")
    first = read_anchored_playlist(playlist)
    assert "PROGRAM-DATE-TIME" not in first
    assert read_anchored_playlist(playlist) is not first  # built again, not kept
