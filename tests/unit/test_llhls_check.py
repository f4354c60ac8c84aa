"""tests/support/llhls_check.py: the checker finds what it is for (a checker that passes
everything proves nothing). Playlists rendered by streaming/llhls.py, then broken."""

from __future__ import annotations

from streaming import llhls
from streaming.lowlatency import LowLatency
from tests.support import llhls_check

MODE = LowLatency(part_target=0.2, segment_target=1.0)


def ten_segments() -> llhls.LiveView:
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:1", "#EXT-X-MEDIA-SEQUENCE:20"]
    lines.append('#EXT-X-MAP:URI="init-stream0.m4s"')
    for number in range(20, 30):
        lines += ["#EXTINF:1.000000,", f"chunk-stream0-{number:05d}.m4s"]
    return llhls.live_view(llhls.parse_playlist("\n".join(lines) + "\n"), [], 15360, MODE, 0)


def test_the_origins_delta_passes():
    view = ten_segments()
    full, delta = (
        llhls_check.parse(llhls.render(view)),
        llhls_check.parse(llhls.render(view, skip="YES")),
    )
    assert delta.skipped == 4
    assert llhls_check.delta_problems(delta, full) == []


def without_segments(text: str, uris: list[str]) -> str:
    lines = text.splitlines()
    kept = []
    for index, line in enumerate(lines):
        if line in uris or (line.startswith("#EXTINF") and lines[index + 1] in uris):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def test_a_delta_skipping_inside_the_skip_boundary_fails():
    view = ten_segments()
    full = llhls_check.parse(llhls.render(view))
    text = llhls.render(view, skip="YES").replace("SKIPPED-SEGMENTS=4", "SKIPPED-SEGMENTS=6")
    text = without_segments(text, ["chunk-stream0-00024.m4s", "chunk-stream0-00025.m4s"])
    problems = llhls_check.delta_problems(llhls_check.parse(text), full)
    assert any("< CAN-SKIP-UNTIL" in problem for problem in problems), problems


def test_a_delta_that_is_not_the_full_playlists_tail_fails():
    view = ten_segments()
    full = llhls_check.parse(llhls.render(view))
    text = llhls.render(view, skip="YES").replace("chunk-stream0-00027", "chunk-stream0-00099")
    problems = llhls_check.delta_problems(llhls_check.parse(text), full)
    assert "delta segments differ from the full playlist's tail" in problems
    nothing = llhls_check.parse(llhls.render(view))  # "delta" without EXT-X-SKIP
    assert any("without #EXT-X-SKIP" in p for p in llhls_check.delta_problems(nothing, full))


PARTS = """#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-MEDIA-SEQUENCE:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.666,CAN-SKIP-UNTIL=6
#EXT-X-PART-INF:PART-TARGET=0.222
#EXT-X-MAP:URI="init-stream0.m4s"
#EXT-X-PART:DURATION={first},URI="chunk-stream0-00001.m4s",BYTERANGE="100@0",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.2,URI="chunk-stream0-00001.m4s",BYTERANGE="100@100"
#EXT-X-PART:DURATION={last},URI="chunk-stream0-00001.m4s",BYTERANGE="100@200"
#EXTINF:{total},
chunk-stream0-00001.m4s
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="chunk-stream0-00002.m4s",BYTERANGE-START=0
"""


def parts_playlist(first: float, last: float) -> llhls_check.LLPlaylist:
    total = f"{first + 0.2 + last:.6f}"
    return llhls_check.parse(PARTS.format(first=first, last=last, total=total))


def test_the_85_percent_rule_exempts_only_a_segments_last_part():
    assert llhls_check.check_playlist(parts_playlist(0.2, 0.05)) == []  # a short last part
    problems = llhls_check.check_playlist(parts_playlist(0.05, 0.2))  # short, INDEPENDENT
    assert problems == ["part 1.0: 0.05 s < 85% of PART-TARGET"]


def test_a_blocking_answer_must_hold_the_part_asked_for():
    view = ten_segments()
    plain = llhls_check.parse(llhls.render(view))
    assert llhls_check.next_part(plain) == (30, 0)
    assert not llhls_check.answers(plain, 30, 0)  # not there: the request must wait
    with_parts = parts_playlist(0.2, 0.2)
    assert llhls_check.answers(with_parts, 1, 2)
    assert not llhls_check.answers(with_parts, 1, 3)  # past its end: part 0 of 2, not listed
    assert not llhls_check.answers(with_parts, 2, 0)
