"""streaming.llhls: LL-HLS playlists from real FFmpeg segments, delivery directives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from streaming import llhls
from streaming.fmp4 import fragments, init_timescale
from streaming.llhls import BadDirective, Directives, Tail
from streaming.llhls_serve import read_snapshot
from streaming.lowlatency import LowLatency
from tests.support import llhls_check
from tests.support.ll_stream import finished_encode, live_playlist

MODE = LowLatency(part_target=0.2, segment_target=1.0)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> Path:
    """A finished LL encode by the real FFmpeg: 5 complete segments per rendition."""
    folder = finished_encode(tmp_path_factory.mktemp("ll") / "show")
    assert (folder / "chunk-stream0-00005.m4s").exists()
    return folder


def live_text(folder: Path, rep: int, listed: int) -> str:
    """The rendition's playlist as it was while live, with ``listed`` segments."""
    return live_playlist((folder / f"media_{rep}.m3u8").read_text(), listed)


def tail(folder: Path, rep: int, number: int, *, cut: int | None = None) -> Tail:
    """A complete segment, or (``cut``) a ``.tmp`` holding its first ``cut`` bytes."""
    data = (folder / f"chunk-stream{rep}-{number:05d}.m4s").read_bytes()
    if cut is not None:
        data = data[:cut]
    found, end = fragments(data)
    uri = llhls.segment_uri("", rep, number)
    return Tail(uri, tuple(found), cut is None, end, len(data), 1_000_000 + number * 1000)


def timescale(folder: Path, rep: int) -> int:
    return init_timescale((folder / f"init-stream{rep}.m4s").read_bytes())


def view_of(folder: Path, rep: int, listed: int, tails: list[Tail]) -> llhls.LiveView:
    playlist = llhls.parse_playlist(live_text(folder, rep, listed))
    return llhls.live_view(playlist, tails, timescale(folder, rep), MODE, rep)


def test_mode_constants_follow_the_spec():
    target = llhls.part_target(MODE)
    assert target == 0.222  # 0.2 s plus one AAC frame at 48 kHz, in whole ms
    assert llhls.part_hold_back(MODE) >= 3 * target
    assert llhls.advance_part_limit(MODE) == int(3 / target)
    assert llhls.part_target(LowLatency(0.25, 2.0)) == 0.272


@pytest.mark.parametrize("rep", [0, 1, 2])
def test_live_playlist_from_real_segments(encoded, rep):
    whole = (encoded / f"chunk-stream{rep}-00004.m4s").read_bytes()
    found, _ = fragments(whole)
    cut = found[2].offset + found[2].length // 2  # half-way through the third fragment
    view = view_of(
        encoded,
        rep,
        3,
        [tail(encoded, rep, 2), tail(encoded, rep, 3), tail(encoded, rep, 4, cut=cut)],
    )
    text = llhls.render(view)
    checked = llhls_check.parse(text)
    assert llhls_check.check_playlist(checked) == []
    assert [s.msn for s in checked.segments if s.parts] == [2, 3]  # the last two complete
    assert not checked.segments[0].parts
    assert [(p.msn, p.index) for p in checked.current] == [(4, 0), (4, 1)]
    assert checked.current[0].independent
    assert checked.hints == [
        {
            "TYPE": "PART",
            "URI": f"chunk-stream{rep}-00004.m4s",
            "BYTERANGE-START": str(cut - found[2].length // 2),
        }
    ]
    assert view.last_msn == 3 and view.last_part == (4, 1)
    # The parts of a complete segment tile its bytes; video parts start with a keyframe
    # only at the segment's start, audio parts always.
    segment = checked.segments[-1]
    data = (encoded / segment.uri).read_bytes()
    assert b"".join(data[p.offset : p.offset + p.length] for p in segment.parts) == data
    flags = [p.independent for p in segment.parts]
    assert flags == ([True] * len(flags) if rep == 2 else [True] + [False] * (len(flags) - 1))
    assert text.index("#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:16:44.000Z") < text.index(
        f'URI="chunk-stream{rep}-00004.m4s",BYTERANGE'
    )


def test_a_renamed_segment_not_yet_listed_is_listed(encoded):
    view = view_of(
        encoded, 0, 3, [tail(encoded, 0, 3), tail(encoded, 0, 4), tail(encoded, 0, 5, cut=24)]
    )
    checked = llhls_check.parse(llhls.render(view))
    assert llhls_check.check_playlist(checked) == []
    assert [s.uri for s in checked.segments][-2:] == [
        "chunk-stream0-00003.m4s",
        "chunk-stream0-00004.m4s",
    ]
    assert checked.segments[-1].msn == 4 and abs(checked.segments[-1].duration - 1.0) < 1e-6
    assert checked.current == [] and checked.hints[0]["URI"] == "chunk-stream0-00005.m4s"
    assert checked.hints[0]["BYTERANGE-START"] == "0"  # only the styp so far: part 0 next
    assert view.last_msn == 4 and view.last_part == (4, 4)


def test_segment_being_written_with_nothing_read_still_hints_the_next_part(encoded):
    view = view_of(encoded, 0, 3, [])
    text = llhls.render(view)
    assert '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="chunk-stream0-00004.m4s",BYTERANGE-START=0' in text
    assert "#EXT-X-PART:" not in text
    assert view.last_part is None


def test_rendition_reports_name_the_other_renditions(encoded):
    views = {
        rep: view_of(encoded, rep, 3, [tail(encoded, rep, 3), tail(encoded, rep, 4, cut=24)])
        for rep in (0, 1, 2)
    }
    reports = [views[r].report(f"media_{r}.m3u8") for r in (1, 2)]
    text = llhls.render(views[0], reports)
    assert '#EXT-X-RENDITION-REPORT:URI="media_1.m3u8",LAST-MSN=3,LAST-PART=4' in text
    assert '#EXT-X-RENDITION-REPORT:URI="media_2.m3u8",LAST-MSN=3,LAST-PART=4' in text


def test_ended_folder_is_served_unchanged(encoded):
    snapshot = read_snapshot(encoded, MODE)
    for rep in (0, 1, 2):
        text = snapshot.text(rep, None).decode()
        checked = llhls_check.parse(text)
        assert checked.ended and llhls_check.check_playlist(checked) == []
        assert "#EXT-X-PART" not in text and "SERVER-CONTROL" not in text


def test_delta_update_skips_old_segments_and_keeps_the_map(tmp_path, encoded):
    # Ten segments listed: 1 s each, CAN-SKIP-UNTIL 6 s: the first four are skipped.
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:1", "#EXT-X-MEDIA-SEQUENCE:20"]
    lines.append('#EXT-X-MAP:URI="init-stream0.m4s"')
    for number in range(20, 30):
        lines += ["#EXTINF:1.000000,", f"chunk-stream0-{number:05d}.m4s"]
    playlist = llhls.parse_playlist("\n".join(lines) + "\n")
    view = llhls.live_view(playlist, [], 15360, MODE, 0)
    full = llhls_check.parse(llhls.render(view))
    delta_text = llhls.render(view, skip="YES")
    delta = llhls_check.parse(delta_text)
    assert llhls_check.check_playlist(delta) == []
    assert delta.version == 9 and delta.skipped == 4
    assert [s.msn for s in delta.segments] == [s.msn for s in full.segments][4:]
    assert [s.uri for s in delta.segments] == [s.uri for s in full.segments][4:]
    assert delta_text.index("#EXT-X-SKIP") < delta_text.index('#EXT-X-MAP:URI="init-stream0.m4s"')
    # A discontinuity (an encoder restart) is never skipped over.
    lines.insert(12, "#EXT-X-DISCONTINUITY")  # before segment 24
    lines.insert(13, '#EXT-X-MAP:URI="run1/init-stream0.m4s"')
    view = llhls.live_view(llhls.parse_playlist("\n".join(lines) + "\n"), [], 15360, MODE, 0)
    assert llhls.skipped_segments(view) == 3
    assert "RECENTLY-REMOVED-DATERANGES" in llhls.render(view, skip="v2")


def test_delta_request_with_nothing_to_skip_gets_the_full_playlist(encoded):
    """Three segments are less than CAN-SKIP-UNTIL (6 s): no EXT-X-SKIP, no version 9."""
    view = edge_view(encoded)
    assert llhls.skipped_segments(view) == 0
    for skip in ("YES", "v2"):
        text = llhls.render(view, skip=skip)
        assert text == llhls.render(view)
        assert "#EXT-X-SKIP" not in text and llhls_check.parse(text).version < 9


def test_runs_live_run_prefix(encoded, tmp_path):
    """After a restart the live run's files are in ``run<k>/``; its URIs carry the prefix."""
    run = tmp_path / "run1"
    run.mkdir()
    for name in ("init-stream0.m4s", "chunk-stream0-00001.m4s", "chunk-stream0-00002.m4s"):
        shutil.copy(encoded / name, run / name)
    text = "\n".join(
        [
            "#EXTM3U",
            "#EXT-X-TARGETDURATION:1",
            "#EXT-X-MEDIA-SEQUENCE:7",
            '#EXT-X-MAP:URI="init-stream0.m4s"',
            "#EXTINF:1.0,",
            "chunk-stream0-00009.m4s",
            "#EXT-X-DISCONTINUITY",
            '#EXT-X-MAP:URI="run1/init-stream0.m4s"',
            "#EXTINF:1.0,",
            "run1/chunk-stream0-00001.m4s",
        ]
    )
    playlist = llhls.parse_playlist(text)
    assert playlist.run_prefix == "run1/"
    data = (run / "chunk-stream0-00002.m4s").read_bytes()[:30000]
    found, end = fragments(data)
    current = Tail("run1/chunk-stream0-00002.m4s", tuple(found), False, end, len(data))
    view = llhls.live_view(playlist, [current], 15360, MODE, 0)
    rendered = llhls.render(view)
    assert 'URI="run1/chunk-stream0-00002.m4s",BYTERANGE-START=' in rendered
    assert view.current_msn == 9 and view.current_parts


# --- directives ---------------------------------------------------------------------------
def q(**values: str) -> dict[str, list[str]]:
    return {key: [value] for key, value in values.items()}


def test_parse_directives_accepts_what_hls_js_sends():
    assert llhls.parse_directives({}) == Directives()
    assert llhls.parse_directives(q(_HLS_msn="12", _HLS_part="3")) == Directives(12, 3)
    assert llhls.parse_directives(q(_HLS_msn="12", _HLS_skip="YES")) == Directives(12, None, "YES")
    assert llhls.parse_directives({"other": ["x"], "_HLS_skip": ["v2"]}).skip == "v2"


@pytest.mark.parametrize(
    "query",
    [
        q(_HLS_part="1"),
        q(_HLS_msn=""),
        q(_HLS_msn="-1"),
        q(_HLS_msn="+1"),
        q(_HLS_msn="1.0"),
        q(_HLS_msn=" 1"),
        q(_HLS_msn="1_0"),
        q(_HLS_msn="²"),
        q(_HLS_msn="١٢"),
        q(_HLS_msn="9" * 10),
        q(_HLS_msn="9" * 5000),
        q(_HLS_msn="1", _HLS_part="x"),
        q(_HLS_skip="NO"),
        q(_HLS_skip="yes"),
        {"_HLS_msn": ["1", "2"]},
    ],
)
def test_parse_directives_refuses_bad_values(query):
    with pytest.raises(BadDirective) as exc:
        llhls.parse_directives(query)
    assert str(exc.value)


def edge_view(encoded) -> llhls.LiveView:
    """Segments 1-3 complete (5 parts each), segment 4 with 2 parts so far."""
    whole = (encoded / "chunk-stream0-00004.m4s").read_bytes()
    found, _ = fragments(whole)
    cut = found[1].offset + found[1].length
    return view_of(
        encoded, 0, 3, [tail(encoded, 0, 2), tail(encoded, 0, 3), tail(encoded, 0, 4, cut=cut)]
    )


@pytest.mark.parametrize(
    ("msn", "part", "answered"),
    [
        (2, None, True),
        (3, None, True),
        (4, None, False),  # segment 4 is not complete
        (3, 4, True),
        (3, 5, True),  # past 3's last part: part 0 of 4, which exists
        (3, 9, True),
        (4, 0, True),
        (4, 1, True),
        (4, 2, False),
        (5, 0, False),
        (1, 0, True),  # long gone: the whole playlist at once
        (1, 20, True),  # a part index no segment has, of a complete segment: at once too
    ],
)
def test_satisfied(encoded, msn, part, answered):
    assert llhls.satisfied(edge_view(encoded), Directives(msn, part)) is answered


@pytest.mark.parametrize(
    ("msn", "part", "refused"),
    [
        (4, 2, False),  # the next part: what hls.js asks
        (5, 0, False),
        (5, 4, False),
        (4, 9, False),  # past the segment's end: part 0+ of the next one, near
        (5, None, False),
        (6, None, True),  # more than two segments beyond the last complete one (3)... +2 = 5
        (5, 12, True),  # more than the Advance Part Limit ahead
        (4, 60, True),  # more parts than any segment has
        (5, 60, True),
        (1, 0, False),
        # A complete segment: answered at once whatever the part index (the spec's 400 is
        # for parts beyond the last part; these are behind it).
        (1, 20, False),
        (3, 20, False),
        (2, 500, False),
    ],
)
def test_check_directives(encoded, msn, part, refused):
    view = edge_view(encoded)
    if refused:
        with pytest.raises(BadDirective):
            llhls.check_directives(view, Directives(msn, part))
    else:
        llhls.check_directives(view, Directives(msn, part))


def test_ended_playlist_satisfies_any_request(encoded):
    playlist = llhls.parse_playlist((encoded / "media_0.m3u8").read_text())
    assert playlist.ended
    view = llhls.live_view(playlist, [], timescale(encoded, 0), MODE, 0)
    assert llhls.satisfied(view, Directives(10**6, 3))
