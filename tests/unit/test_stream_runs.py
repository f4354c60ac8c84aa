"""Stitched HLS playlists of a stream's encoder runs (streaming/runs.py): numbering goes on
across runs, discontinuities are marked where a run starts, and a live window keeps both
counts right (``MEDIA-SEQUENCE``, ``DISCONTINUITY-SEQUENCE``)."""

from __future__ import annotations

import m3u8

from streaming.runs import _hls, _save_runs, close_run, segments_closed

SECOND = 90000


def run(number: int, count: int, start: int = 1) -> dict:
    entries = [[i * SECOND, SECOND] for i in range(start - 1, start - 1 + count)]
    return {"run": number, "reps": {"0": {"timescale": SECOND, "start": start, "entries": entries}}}


def test_final_lists_every_run_numbered_from_one_with_a_discontinuity_per_run():
    text = _hls("0", [run(0, 3), run(1, 2), run(2, 2)], window=4, final=True)
    playlist = m3u8.loads(text)
    assert playlist.is_endlist and playlist.media_sequence == 1
    assert [s.uri for s in playlist.segments] == [
        "chunk-stream0-00001.m4s",
        "chunk-stream0-00002.m4s",
        "chunk-stream0-00003.m4s",
        "run1/chunk-stream0-00001.m4s",
        "run1/chunk-stream0-00002.m4s",
        "run2/chunk-stream0-00001.m4s",
        "run2/chunk-stream0-00002.m4s",
    ]
    assert [i for i, s in enumerate(playlist.segments) if s.discontinuity] == [3, 5]
    assert [s.init_section.uri for s in playlist.segments[2:4]] == [
        "init-stream0.m4s",
        "run1/init-stream0.m4s",
    ]


def test_live_window_across_the_boundary():
    playlist = m3u8.loads(_hls("0", [run(0, 5), run(1, 2)], window=4, final=False))
    assert not playlist.is_endlist
    assert playlist.media_sequence == 4 and playlist.discontinuity_sequence == 0
    assert [s.uri.split("/")[0] for s in playlist.segments] == [
        "chunk-stream0-00004.m4s",
        "chunk-stream0-00005.m4s",
        "run1",
        "run1",
    ]
    assert playlist.segments[2].discontinuity


def test_live_window_after_the_boundary_scrolled_out():
    # The live run lists its own window (segments 3..6): the earlier ones still count.
    playlist = m3u8.loads(_hls("0", [run(0, 5), run(1, 4, start=3)], window=4, final=False))
    assert playlist.media_sequence == 5 + 3 and playlist.discontinuity_sequence == 1
    assert not any(s.discontinuity for s in playlist.segments)
    assert playlist.segments[0].uri == "run1/chunk-stream0-00003.m4s"


def test_a_run_without_segments_adds_no_discontinuity():
    empty = {"run": 1, "reps": {}}
    playlist = m3u8.loads(_hls("0", [run(0, 2), empty, run(2, 1)], window=0, final=True))
    assert [s.discontinuity for s in playlist.segments] == [False, False, True]


def test_segments_closed_counts_each_representation_on_its_own(tmp_path):
    """A finalised run may end with one more audio segment than video ones: the video
    count must not take the audio's."""
    first = run(0, 3)
    first["reps"]["2"] = {**first["reps"]["0"], "entries": first["reps"]["0"]["entries"] * 2}
    _save_runs(tmp_path, [first, run(1, 2)])
    assert segments_closed(tmp_path) == {0: 5, 2: 6}
    assert segments_closed(tmp_path / "none") == {}


def test_closing_a_killed_run_drops_its_unfinished_segment(tmp_path):
    folder = tmp_path / "run1"
    folder.mkdir()
    (folder / "chunk-stream0-00004.m4s.tmp").write_bytes(b"styp")
    (folder / "chunk-stream0-00003.m4s").write_bytes(b"done")
    close_run(tmp_path, 1)  # no manifest: nothing listed, nothing unfinished left
    assert sorted(p.name for p in folder.iterdir()) == ["chunk-stream0-00003.m4s"]
