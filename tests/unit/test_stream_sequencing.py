"""Chunk sequencing and WebM structure checks, without FFmpeg.

``ReorderBuffer``: duplicates ignored, early chunks held, gaps skipped after a bounded
wait (or at once when the held bytes overflow), the header chunk never skipped.
``WebMStreamChecker``: on a hand-built WebM stream (EBML written here byte by byte).
"""

from __future__ import annotations

import logging
import random

import pytest

from streaming.chunks import Chunk, Gap, HeldBufferFull, ReorderBuffer
from streaming.webm import WebMError, WebMStreamChecker
from tests.support.media import webm_blocks


# --- ReorderBuffer -----------------------------------------------------------------------
def seqs(released) -> list:
    return [r.seq if isinstance(r, Chunk) else ("gap", r.first, r.last) for r in released]


def test_in_order_chunks_pass_straight_through():
    buf = ReorderBuffer(first_seq=0)
    for seq in range(5):
        assert seqs(buf.push(seq, b"x", now=0.0)) == [seq]
    assert buf.stats.accepted == 5
    assert buf.next_seq == 5
    assert buf.deadline() is None


def test_duplicates_are_ignored_and_logged(caplog):
    buf = ReorderBuffer(first_seq=1)
    buf.push(1, b"a", 0.0)
    buf.push(3, b"c", 0.0)  # held
    with caplog.at_level(logging.INFO, logger="streaming.chunks"):
        assert buf.push(1, b"a", 0.1) == []  # already released
        assert buf.push(3, b"c", 0.1) == []  # already held
    assert buf.stats.duplicates == 2
    assert "seq=1: duplicate" in caplog.text
    assert buf.seen(1) and buf.seen(3) and not buf.seen(2)


def test_out_of_order_chunks_are_held_then_released_in_order():
    buf = ReorderBuffer(first_seq=0)
    buf.push(0, b"0", 0.0)
    assert buf.push(3, b"3", 0.0) == []
    assert buf.push(2, b"2", 0.1) == []
    assert buf.held_count == 2 and buf.held_bytes == 2
    released = buf.push(1, b"1", 0.2)
    assert seqs(released) == [1, 2, 3]
    assert [r.data for r in released] == [b"1", b"2", b"3"]
    assert buf.stats.reordered == 2
    assert buf.held_count == 0 and buf.deadline() is None


def test_a_gap_is_waited_for_then_skipped(caplog):
    buf = ReorderBuffer(first_seq=0, gap_timeout=2.0)
    buf.push(0, b"0", 10.0)
    buf.push(2, b"2", 10.5)
    buf.push(3, b"3", 11.0)
    assert buf.deadline() == 12.5
    assert buf.poll(12.4) == []
    with caplog.at_level(logging.WARNING, logger="streaming.chunks"):
        released = buf.poll(12.5)
    assert seqs(released) == [("gap", 1, 1), 2, 3]
    assert released[0].reason == "timeout"
    assert buf.stats.gaps == 1 and buf.stats.missing == 1
    assert "seq=1..1 missing (timeout)" in caplog.text
    # The missing chunk turning up afterwards is ignored (counted as late).
    assert buf.push(1, b"1", 13.0) == []
    assert buf.stats.late == 1 and buf.stats.duplicates == 0


def test_a_filled_gap_restarts_the_clock_for_the_next_one():
    buf = ReorderBuffer(first_seq=0, gap_timeout=1.0)
    buf.push(0, b"0", 0.0)
    buf.push(2, b"2", 0.0)  # gap at 1
    buf.push(4, b"4", 0.5)  # gap at 3 as well
    assert seqs(buf.push(1, b"1", 0.9)) == [1, 2]
    assert buf.deadline() == pytest.approx(1.9)  # the gap at 3 is timed from now
    assert buf.poll(1.5) == []
    assert seqs(buf.poll(1.9)) == [("gap", 3, 3), 4]


def test_several_missing_in_a_row_are_one_gap():
    buf = ReorderBuffer(first_seq=0, gap_timeout=0.5)
    buf.push(0, b"0", 0.0)
    buf.push(5, b"5", 0.0)
    released = buf.poll(1.0)
    assert isinstance(released[0], Gap) and released[0].count == 4
    assert seqs(released) == [("gap", 1, 4), 5]


def test_held_bytes_are_bounded_by_skipping_the_gap_at_once():
    buf = ReorderBuffer(first_seq=0, gap_timeout=60, max_held_bytes=10)
    buf.push(0, b"0", 0.0)
    assert buf.push(2, b"22222", 0.0) == []
    released = buf.push(3, b"333333", 0.0)  # 11 held bytes > 10
    assert seqs(released) == [("gap", 1, 1), 2, 3]
    assert released[0].reason == "overflow"
    assert buf.held_bytes == 0


def test_held_chunk_count_is_bounded_too():
    buf = ReorderBuffer(first_seq=0, gap_timeout=60, max_held_chunks=3)
    buf.push(0, b"0", 0.0)
    for seq in (2, 3, 4):
        assert buf.push(seq, b"x", 0.0) == []
    assert seqs(buf.push(5, b"x", 0.0)) == [("gap", 1, 1), 2, 3, 4, 5]


def test_the_first_chunk_is_never_skipped():
    buf = ReorderBuffer(first_seq=0, gap_timeout=0.1, max_held_bytes=4)
    assert buf.push(1, b"11", 0.0) == []
    assert buf.deadline() is None  # no timeout: without seq 0 nothing can be decoded
    assert buf.poll(100.0) == []
    with pytest.raises(HeldBufferFull, match="waiting for the first chunk"):
        buf.push(2, b"222", 0.0)
    assert seqs(buf.push(0, b"0", 100.0)) == [0, 1]


def test_flush_releases_everything_held_at_end_of_stream():
    buf = ReorderBuffer(first_seq=0, gap_timeout=60)
    buf.push(0, b"0", 0.0)
    buf.push(2, b"2", 0.0)
    buf.push(5, b"5", 0.0)
    assert seqs(buf.flush()) == [("gap", 1, 1), 2, ("gap", 3, 4), 5]
    assert buf.held_count == 0


def test_sequence_numbers_below_the_first_are_refused():
    buf = ReorderBuffer(first_seq=1)
    with pytest.raises(ValueError):
        buf.push(0, b"x", 0.0)


def test_random_arrival_orders_release_every_chunk_exactly_once():
    rng = random.Random(7)
    for _ in range(50):
        order = list(range(40))
        rng.shuffle(order)
        order += rng.sample(range(40), 10)  # retries
        buf = ReorderBuffer(first_seq=0, gap_timeout=60)
        out = []
        for seq in order:
            out += buf.push(seq, bytes([seq]), 0.0)
        assert seqs(out) == list(range(40))
        assert buf.stats.duplicates == 10


# --- a hand-built WebM stream --------------------------------------------------------------
UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"


def vint(n: int) -> bytes:
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return ((1 << (7 * length)) | n).to_bytes(length, "big")
    raise ValueError(n)


def element(ident: int, payload: bytes, *, unknown: bool = False) -> bytes:
    head = ident.to_bytes((ident.bit_length() + 7) // 8, "big")
    return head + (UNKNOWN_SIZE if unknown else vint(len(payload))) + payload


def uint(ident: int, value: int) -> bytes:
    return element(ident, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def ebml_header(doc_type: str = "webm") -> bytes:
    return element(0x1A45DFA3, uint(0x4286, 1) + element(0x4282, doc_type.encode()))


def tracks(video: bool = True) -> bytes:
    entries = b""
    if video:
        entries += element(
            0xAE,
            uint(0xD7, 1)
            + uint(0x83, 1)
            + element(0x86, b"V_VP8")
            + element(0xE0, uint(0xB0, 640) + uint(0xBA, 480)),
        )
    entries += element(
        0xAE,
        uint(0xD7, 2) + uint(0x83, 2) + element(0x86, b"A_OPUS") + element(0xE1, uint(0x9F, 2)),
    )
    return element(0x1654AE6B, entries)


def simple_block(track: int, timecode: int, size: int, key: bool = False) -> bytes:
    body = vint(track) + timecode.to_bytes(2, "big") + (b"\x80" if key else b"\x00")
    return element(0xA3, body + bytes(random.Random(timecode).randrange(256) for _ in range(size)))


def cluster(timestamp: int, frames: int = 5) -> bytes:
    body = uint(0xE7, timestamp)
    for i in range(frames):
        body += simple_block(1, i * 33, 300, key=i == 0) + simple_block(2, i * 20, 40)
    return element(0x1F43B675, body, unknown=True)


def webm_stream(clusters: int = 4, *, video: bool = True) -> tuple[bytes, list[int]]:
    """A live-style stream (unknown sizes); also returns where each Cluster starts."""
    head = ebml_header() + b"\x18\x53\x80\x67" + UNKNOWN_SIZE
    head += element(0x1549A966, uint(0x2AD7B1, 1_000_000)) + tracks(video)
    data, starts = head, []
    for n in range(clusters):
        starts.append(len(data))
        data += cluster(n * 1000)
    return data, starts


def feed_in(checker: WebMStreamChecker, data: bytes, size: int) -> bytes:
    return b"".join(checker.check(data[i : i + size]) for i in range(0, len(data), size))


@pytest.mark.parametrize("size", [1, 3, 13, 100, 4096, 1 << 20])
def test_any_chunking_of_a_webm_stream_is_accepted(size):
    data, _ = webm_stream()
    checker = WebMStreamChecker()
    assert feed_in(checker, data, size) == data
    info = checker.info
    assert info.doc_type == "webm"
    assert (info.video.codec, info.video.width, info.video.height) == ("V_VP8", 640, 480)
    assert info.audio.codec == "A_OPUS" and info.audio.channels == 2


def test_the_test_stream_lists_its_frames():
    """tests/support/media.webm_blocks, which cuts clips by time, reads the frames."""
    data, starts = webm_stream()
    blocks = webm_blocks(data)
    assert len(blocks) == 4 * 10
    assert blocks[0].offset > starts[0]
    assert [b.timestamp_ms for b in blocks if b.track == 1][:6] == [
        0,
        33,
        66,
        99,
        132,
        1000,
    ]


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (b"<!DOCTYPE html><html>502 Bad Gateway</html>", "EBML magic"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "EBML magic"),
        (b"\x00\x00\x00\x18ftypmp42", "EBML magic"),
        (b'{"seq": 0, "data": "..."}', "EBML magic"),
        (ebml_header("mp4"), "DocType is 'mp4'"),
    ],
)
def test_a_first_chunk_that_is_not_webm_is_refused(first, message):
    checker = WebMStreamChecker()
    with pytest.raises(WebMError, match=message):
        checker.check(first + bytes(64))
    assert not checker.started
    data, _ = webm_stream()
    assert checker.check(data) == data  # the same checker still takes a real stream


def test_matroska_doc_type_is_accepted():
    checker = WebMStreamChecker()
    checker.check(ebml_header("matroska"))
    assert checker._s.doc_type == "matroska"


def test_a_stream_without_video_is_refused():
    data, _ = webm_stream(video=False)
    with pytest.raises(WebMError, match="no video track"):
        WebMStreamChecker().check(data)


GARBAGE = [
    b"<html><body>413 Request Entity Too Large</body></html>",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(500),
    b"\x00\x00\x00\x20ftypisom" + bytes(500),
    b'{"error": "oops"}',
    b"\x89PNG\r\n\x1a\n" + bytes(100),
]


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_mid_stream_is_refused_and_leaves_the_state_alone(garbage):
    data, starts = webm_stream()
    cut = starts[2]
    checker = WebMStreamChecker()
    checker.check(data[:cut])
    offset = checker.offset
    with pytest.raises(WebMError, match=r"^not a continuation of the WebM stream: "):
        checker.check(garbage)
    assert checker.offset == offset
    assert checker.check(data[cut:]) == data[cut:]


def test_garbage_right_after_an_element_id_is_refused():
    """Browser chunks end right after a frame's element ID: garbage then is its 'size'."""
    data, starts = webm_stream()
    cut = data.index(b"\xa3", starts[1] + 12) + 1  # after the Cluster's first SimpleBlock ID
    checker = WebMStreamChecker()
    checker.check(data[:cut])
    for garbage in GARBAGE:
        with pytest.raises(WebMError):
            checker.check(garbage)
    assert checker.check(data[cut:]) == data[cut:]


@pytest.mark.parametrize("where", ["at an element boundary", "right after a frame's ID"])
def test_random_bytes_are_almost_always_refused(where):
    data, starts = webm_stream()
    cut = starts[2] if where.startswith("at") else data.index(b"\xa3", starts[2] + 12) + 1
    base = WebMStreamChecker()
    base.check(data[:cut])
    rng = random.Random(1)
    accepted = 0
    for _ in range(2000):
        checker = WebMStreamChecker()
        checker._s = base._s.copy()
        try:
            checker.check(rng.randbytes(rng.randrange(16, 4000)))
            accepted += 1
        except WebMError:
            pass
    assert accepted <= 4  # measured: about 1 in 5000 (see docs/decisions.md)


def test_a_second_header_mid_stream_is_refused_with_a_reason():
    data, starts = webm_stream()
    checker = WebMStreamChecker()
    checker.check(data[: starts[1]])
    with pytest.raises(WebMError, match="restarted its recorder"):
        checker.check(data)


def test_a_frame_for_an_undeclared_track_is_refused():
    data, starts = webm_stream()
    checker = WebMStreamChecker()
    checker.check(data[: starts[1]])
    bad = element(0x1F43B675, uint(0xE7, 5000) + simple_block(9, 0, 50), unknown=True)
    with pytest.raises(WebMError, match="track 9"):
        checker.check(bad)


def test_resync_after_a_gap_waits_for_the_next_cluster():
    data, starts = webm_stream(clusters=4)
    checker = WebMStreamChecker()
    checker.check(data[: starts[1] + 500])  # ends inside a frame of cluster 1
    assert checker._s.skip > 0
    filler = checker.resync()  # bytes were lost: complete the cut frame with zeros
    assert filler == bytes(len(filler)) and len(filler) == checker_skip_before(data, starts)
    # The next chunk started after the loss: its bytes before cluster 2 are dropped.
    lost_to = starts[1] + 1500
    assert checker.check(data[lost_to : starts[2] - 10]) == b""
    forwarded = checker.check(data[starts[2] - 10 : starts[3]])
    assert forwarded == data[starts[2] : starts[3]]
    assert checker.check(data[starts[3] :]) == data[starts[3] :]


def checker_skip_before(data: bytes, starts: list[int]) -> int:
    probe = WebMStreamChecker()
    probe.check(data[: starts[1] + 500])
    return probe._s.skip


def test_resync_with_a_cluster_id_cut_by_the_chunk_end():
    data, starts = webm_stream(clusters=3)
    checker = WebMStreamChecker()
    checker.check(data[: starts[1] + 200])
    checker.resync()
    assert checker.check(data[starts[1] + 900 : starts[2] + 2]) == b""
    # The two bytes of the Cluster ID held back are forwarded with the rest of it.
    assert checker.check(data[starts[2] + 2 :]) == data[starts[2] :]
