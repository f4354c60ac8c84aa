"""streaming/lldash.py: the LL-DASH additions to an MPD, on FFmpeg's and on runs.py's
stitched multi-Period MPDs (the live run is the last Period, its files under run<k>/), and
the segments it announces checked against a real FFmpeg encode's."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from streaming.lldash import (
    CATCH_UP_MAX,
    UTC_SCHEME,
    OnDisk,
    latency_ms,
    low_latency_mpd,
    media_name,
    on_disk,
)
from streaming.lowlatency import LowLatency
from tests.support.ll_stream import finished_encode

NS = {"mpd": "urn:mpeg:dash:schema:mpd:2011"}
MODE = LowLatency(part_target=0.2, segment_target=1.0)
TIME_URL = "https://rtc.example.org/streams/time/"


WRITING = OnDisk(complete=False)


def rep(rep_id: str, timeline: str, timescale: int = 15360, start: int = 1) -> str:
    kind = 'mimeType="video/mp4" codecs="avc1.64001e"'
    if timescale == 48000:
        kind = 'mimeType="audio/mp4" codecs="mp4a.40.2"'
    return (
        f'<Representation id="{rep_id}" {kind} bandwidth="1">'
        f'<SegmentTemplate timescale="{timescale}" availabilityTimeComplete="false" '
        f'initialization="init-stream$RepresentationID$.m4s" '
        f'media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="{start}">'
        f"<SegmentTimeline>{timeline}</SegmentTimeline></SegmentTemplate></Representation>"
    )


def mpd(periods: str, kind: str = "dynamic", extra: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="{kind}" minimumUpdatePeriod="PT1S">'
        f"<ProgramInformation/>{extra}{periods}</MPD>"
    )


def timeline(root: ET.Element, period: int, rep_id: str) -> list[dict[str, str]]:
    period_el = root.findall("mpd:Period", NS)[period]
    rep_el = next(
        r for r in period_el.iter(f"{{{NS['mpd']}}}Representation") if r.get("id") == rep_id
    )
    return [
        dict(s.attrib) for s in rep_el.findall("mpd:SegmentTemplate/mpd:SegmentTimeline/mpd:S", NS)
    ]


def durations(root: ET.Element, period: int, rep_id: str) -> list[int]:
    return [
        int(s["d"]) for s in timeline(root, period, rep_id) for _ in range(int(s.get("r", 0)) + 1)
    ]


# A live run as FFmpeg lists it: 9 segments of 1 s; AAC audio segments end at the first
# 1024-sample frame boundary after the video's (the first a frame short: priming).
VIDEO_9 = '<S t="0" d="15360" r="8"/>'
AUDIO_9 = '<S t="0" d="47104"/><S d="48128" r="7"/>'


def live(video: str = VIDEO_9, audio: str = AUDIO_9) -> str:
    return mpd(
        '<Period id="0" start="PT0.0S"><AdaptationSet contentType="video">'
        + rep("0", video)
        + '</AdaptationSet><AdaptationSet contentType="audio">'
        + rep("2", audio, timescale=48000)
        + "</AdaptationSet></Period>"
    )


def test_announces_the_segment_being_written_and_the_next():
    asked = []

    def state(prefix: str, name: str) -> OnDisk | None:
        asked.append((prefix, name))
        return WRITING if name.endswith("-00010.m4s") else None

    root = ET.fromstring(low_latency_mpd(live(), MODE, TIME_URL, state))
    assert asked == [("", "chunk-stream0-00010.m4s"), ("", "chunk-stream2-00010.m4s")]
    assert timeline(root, 0, "0") == [{"t": "0", "d": "15360", "r": "10"}]  # 9 + 2 listed
    # Audio: whole AAC frames as the listed ones (47), not the nominal 48000; no segment a
    # frame short listed yet (the first is the encoder's priming), so no bound known.
    assert durations(root, 0, "2")[9:] == [48128, 48128]
    for template in root.iter(f"{{{NS['mpd']}}}SegmentTemplate"):
        assert template.get("availabilityTimeOffset") == "0.8"
        assert template.get("availabilityTimeComplete") == "false"


# Audio segment durations (48 kHz) of a pipeline LL run with 1 s segments, from its files:
# 47 AAC frames, one of 46 when the audio end would get too far past the video's.
PIPELINE_AUDIO = [48128] * 10 + [47104] + [48128] * 7 + [47104] + [48128] * 7 + [47104]
PIPELINE_AUDIO += [48128] * 7 + [47104] + [48128] * 3


def test_audio_durations_exact_once_a_short_segment_was_listed():
    """The pipeline's real audio timeline replayed through a 10-segment window (FFmpeg's
    ``window_size``): from the first 46-frame segment on, both announced durations are
    the ones the segments closed with; before it, 47 frames (only that first short one
    is announced wrong, and the next MPD corrects it)."""

    def live_window(listed: int) -> str:
        first = max(1, listed - 9)
        audio = PIPELINE_AUDIO[first - 1 : listed]
        start = sum(PIPELINE_AUDIO[: first - 1])
        audio_s = f'<S t="{start}" d="{audio[0]}"/>' + "".join(f'<S d="{d}"/>' for d in audio[1:])
        video_s = f'<S t="{15360 * (first - 1)}" d="15360" r="{len(audio) - 1}"/>'
        text = live(video_s, audio_s)
        return text.replace('startNumber="1"', f'startNumber="{first}"')

    wrong = []
    for listed in range(1, len(PIPELINE_AUDIO) - 1):
        name = f"-{listed + 1:05d}.m4s"
        state = lambda p, n, name=name: WRITING if n.endswith(name) else None  # noqa: E731
        root = ET.fromstring(low_latency_mpd(live_window(listed), MODE, TIME_URL, state))
        announced = durations(root, 0, "2")[-2:]
        if announced != PIPELINE_AUDIO[listed : listed + 2]:
            wrong.append(listed + 1 if announced[0] != PIPELINE_AUDIO[listed] else listed + 2)
    assert wrong == [11, 11]  # the first short segment, as the one being written and next


def test_a_closed_segment_not_listed_yet_is_listed_with_its_duration_from_disk():
    """runs.py stitches the MPD on the pipeline's tick: a segment renamed since is listed
    (the MPD never loses what the previous one announced), then the one being written."""
    on = {
        "chunk-stream0-00010.m4s": OnDisk(True, 15360),
        "chunk-stream2-00010.m4s": OnDisk(True, 47104),
    }
    on |= {"chunk-stream0-00011.m4s": WRITING, "chunk-stream2-00011.m4s": WRITING}
    root = ET.fromstring(low_latency_mpd(live(), MODE, TIME_URL, lambda p, n: on.get(n)))
    assert durations(root, 0, "0")[9:] == [15360] * 3  # closed 10, writing 11, next 12
    assert durations(root, 0, "2")[9:] == [47104, 48128, 48128]
    # Closed, and the next not started yet: listed all the same, nothing announced after.
    del on["chunk-stream0-00011.m4s"], on["chunk-stream2-00011.m4s"]
    root = ET.fromstring(low_latency_mpd(live(), MODE, TIME_URL, lambda p, n: on.get(n)))
    assert durations(root, 0, "2")[9:] == [47104]
    # A closed segment whose fragments do not read (no duration): predicted.
    on["chunk-stream2-00010.m4s"] = OnDisk(True)
    root = ET.fromstring(low_latency_mpd(live(), MODE, TIME_URL, lambda p, n: on.get(n)))
    assert durations(root, 0, "2")[9:] == [48128]


def test_nothing_announced_when_no_segment_is_being_written():
    text = mpd(
        '<Period id="0"><AdaptationSet>'
        + rep("0", '<S t="0" d="15360"/>')
        + "</AdaptationSet></Period>"
    )
    root = ET.fromstring(low_latency_mpd(text, MODE, TIME_URL, lambda p, n: None))
    assert timeline(root, 0, "0") == [{"t": "0", "d": "15360"}]
    # ... nor before the first segment is complete (its start is not in the MPD yet)
    empty = mpd('<Period id="0"><AdaptationSet>' + rep("0", "") + "</AdaptationSet></Period>")
    root = ET.fromstring(low_latency_mpd(empty, MODE, TIME_URL, lambda p, n: WRITING))
    assert timeline(root, 0, "0") == []


def test_stitched_mpd_only_the_last_period_in_its_run_folder():
    text = mpd(
        '<Period id="0" start="PT0.000S"><AdaptationSet>'
        + rep("0", '<S t="0" d="15360" r="5"/>')
        + '</AdaptationSet></Period><Period id="1" start="PT8.000S"><BaseURL>run1/</BaseURL>'
        + "<AdaptationSet>"
        + rep("0", '<S t="0" d="15360" r="1"/>')
        + "</AdaptationSet></Period>"
    )
    asked = []
    root = ET.fromstring(
        low_latency_mpd(text, MODE, TIME_URL, lambda p, n: asked.append((p, n)) or WRITING)
    )
    assert asked == [("run1/", "chunk-stream0-00003.m4s")]
    assert timeline(root, 0, "0") == [{"t": "0", "d": "15360", "r": "5"}]  # closed run: as is
    assert timeline(root, 1, "0") == [{"t": "0", "d": "15360", "r": "3"}]
    first, last = root.findall("mpd:Period", NS)
    assert first.find(".//mpd:SegmentTemplate", NS).get("availabilityTimeOffset") is None
    assert last.find(".//mpd:SegmentTemplate", NS).get("availabilityTimeOffset") == "0.8"
    # A BaseURL that is not a run folder of ours: attributes, but no file looked for.
    odd = text.replace("<BaseURL>run1/</BaseURL>", "<BaseURL>../elsewhere/</BaseURL>")
    asked.clear()
    low_latency_mpd(odd, MODE, TIME_URL, lambda p, n: asked.append((p, n)) or WRITING)
    assert asked == []


def test_service_description_and_utc_timing():
    text = mpd(
        '<Period id="0"><AdaptationSet>'
        + rep("0", '<S t="0" d="15360"/>')
        + "</AdaptationSet></Period>"
        '<UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-xsdate:2014" value="/streams/time/"/>',
        extra='<ServiceDescription id="0"></ServiceDescription>',  # FFmpeg writes it empty
    )
    root = ET.fromstring(low_latency_mpd(text, MODE, TIME_URL, lambda p, n: None))
    described = root.findall("mpd:ServiceDescription", NS)
    assert len(described) == 1
    latency = described[0].find("mpd:Latency", NS).attrib
    assert latency == {"target": "800", "min": "400", "max": "1800"}
    assert latency_ms(MODE) == (800, 400, 1800)
    assert described[0].find("mpd:PlaybackRate", NS).attrib == {"min": "0.96", "max": "1.04"}
    timings = root.findall("mpd:UTCTiming", NS)
    assert [t.attrib for t in timings] == [{"schemeIdUri": UTC_SCHEME, "value": TIME_URL}]
    assert list(root)[-1].tag.endswith("UTCTiming")  # after the Periods, as the schema orders
    # No ServiceDescription written: one is added before the first Period.
    bare = text.replace('<ServiceDescription id="0"></ServiceDescription>', "")
    root = ET.fromstring(low_latency_mpd(bare, MODE, TIME_URL, lambda p, n: None))
    tags = [child.tag.split("}")[1] for child in root]
    assert tags.index("ServiceDescription") < tags.index("Period")


def test_static_mpds_are_left_as_written():
    text = mpd(
        '<Period id="0"><AdaptationSet>'
        + rep("0", '<S t="0" d="15360"/>')
        + "</AdaptationSet></Period>",
        kind="static",
    )
    assert low_latency_mpd(text, MODE, TIME_URL, lambda p, n: WRITING) == text


def test_media_names():
    template = "chunk-stream$RepresentationID$-$Number%05d$.m4s"
    assert media_name(template, "2", 17) == "chunk-stream2-00017.m4s"
    assert media_name("seg-$Number$.m4s", "0", 3) == "seg-3.m4s"
    assert media_name("seg-$Time$.m4s", "0", 3) is None
    assert media_name("../x-$Number$.m4s", "0", 3) is None


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> Path:
    """A real low-latency encode of 14 s (FFmpeg's dash muxer, AAC audio), finished."""
    return finished_encode(tmp_path_factory.mktemp("lldash") / "show", seconds=14)


def cut_back(final: str, listed: int) -> str:
    """FFmpeg's final MPD as it was while live with its first ``listed`` segments."""
    root = ET.fromstring(final)
    root.set("type", "dynamic")
    for line in root.iter(f"{{{NS['mpd']}}}SegmentTimeline"):
        first = line[0].get("t", "0")
        kept = [int(s.get("d")) for s in line for _ in range(int(s.get("r", 0)) + 1)][:listed]
        for s in list(line):
            line.remove(s)
        for index, d in enumerate(kept):
            attributes = {"t": first, "d": str(d)} if not index else {"d": str(d)}
            ET.SubElement(line, f"{{{NS['mpd']}}}S", attributes)
    return ET.tostring(root, encoding="unicode")


def start_number(final: str) -> int:
    return int(ET.fromstring(final).find(".//mpd:SegmentTemplate", NS).get("startNumber"))


def test_announced_durations_against_a_real_encode(encoded):
    """FFmpeg's final MPD cut back to each live state: video segments are announced with
    their real duration; audio ones with whole AAC frames (the nominal 48000 no audio
    segment has), right unless a first 46-frame one comes."""
    final = (encoded / "manifest.mpd").read_text()
    real = durations(ET.fromstring(final), 0, "2")
    assert len(real) >= 8 and 48000 not in real
    first_short = next((i for i, d in enumerate(real[1:], 1) if d < max(real[1:])), len(real))
    for listed in range(1, len(real) - 2):  # the last one is cut short by the stop
        name = f"-{start_number(final) + listed:05d}.m4s"
        state = lambda p, n, name=name: WRITING if n.endswith(name) else None  # noqa: E731
        root = ET.fromstring(low_latency_mpd(cut_back(final, listed), MODE, TIME_URL, state))
        assert durations(root, 0, "0")[listed:] == [15360, 15360]
        announced = durations(root, 0, "2")[listed:]
        assert all(d % 1024 == 0 for d in announced), announced
        if listed + 2 <= first_short:
            assert announced == real[listed : listed + 2], listed


def test_closed_segments_read_from_disk(encoded):
    """``on_disk`` on a real folder: the segments closed since the MPD's listing are listed
    with their durations from their fragments, exactly as FFmpeg's final MPD has them; at
    most CATCH_UP_MAX of them (a listing further behind is no live edge)."""
    final = (encoded / "manifest.mpd").read_text()
    whole = ET.fromstring(final)
    count = len(durations(whole, 0, "0"))
    behind = cut_back(final, count - CATCH_UP_MAX)
    root = ET.fromstring(low_latency_mpd(behind, MODE, TIME_URL, on_disk(encoded)))
    for rep_id in ("0", "1", "2"):
        assert durations(root, 0, rep_id) == durations(whole, 0, rep_id), rep_id
    further = cut_back(final, count - CATCH_UP_MAX - 1)
    root = ET.fromstring(low_latency_mpd(further, MODE, TIME_URL, on_disk(encoded)))
    assert durations(root, 0, "2") == durations(whole, 0, "2")[:-1]
    state = on_disk(encoded)
    assert state("", "chunk-stream0-00099.m4s") is None
    (encoded / "chunk-stream0-00099.m4s.tmp").write_bytes(b"")
    assert state("", "chunk-stream0-00099.m4s") == OnDisk(complete=False)
