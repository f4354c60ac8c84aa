"""streaming/lldash.py: the LL-DASH additions to an MPD, on FFmpeg's and on runs.py's
stitched multi-Period MPDs (the live run is the last Period, its files under run<k>/)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from streaming.lldash import UTC_SCHEME, latency_ms, low_latency_mpd, media_name
from streaming.lowlatency import LowLatency

NS = {"mpd": "urn:mpeg:dash:schema:mpd:2011"}
MODE = LowLatency(part_target=0.2, segment_target=1.0)
TIME_URL = "https://rtc.example.org/streams/time/"


def rep(rep_id: str, timeline: str, timescale: int = 15360, start: int = 1) -> str:
    return (
        f'<Representation id="{rep_id}" mimeType="video/mp4" bandwidth="1">'
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


def test_announces_the_segment_being_written_and_the_next():
    text = mpd(
        '<Period id="0" start="PT0.0S"><AdaptationSet>'
        + rep("0", '<S t="0" d="15360" r="2"/>')
        + "</AdaptationSet><AdaptationSet>"
        + rep("2", '<S t="0" d="47104"/><S d="48128" r="1"/>', timescale=48000)
        + "</AdaptationSet></Period>"
    )
    asked = []

    def writing(prefix: str, name: str) -> bool:
        asked.append((prefix, name))
        return True

    root = ET.fromstring(low_latency_mpd(text, MODE, TIME_URL, writing))
    assert asked == [("", "chunk-stream0-00004.m4s"), ("", "chunk-stream2-00004.m4s")]
    assert timeline(root, 0, "0") == [{"t": "0", "d": "15360", "r": "4"}]  # 3 + 2 listed
    assert timeline(root, 0, "2")[-1] == {"d": "48000", "r": "1"}  # nominal: 1 s at 48 kHz
    for template in root.iter(f"{{{NS['mpd']}}}SegmentTemplate"):
        assert template.get("availabilityTimeOffset") == "0.8"
        assert template.get("availabilityTimeComplete") == "false"


def test_nothing_announced_when_no_segment_is_being_written():
    text = mpd(
        '<Period id="0"><AdaptationSet>'
        + rep("0", '<S t="0" d="15360"/>')
        + "</AdaptationSet></Period>"
    )
    root = ET.fromstring(low_latency_mpd(text, MODE, TIME_URL, lambda p, n: False))
    assert timeline(root, 0, "0") == [{"t": "0", "d": "15360"}]
    # ... nor before the first segment is complete (its start is not in the MPD yet)
    empty = mpd('<Period id="0"><AdaptationSet>' + rep("0", "") + "</AdaptationSet></Period>")
    root = ET.fromstring(low_latency_mpd(empty, MODE, TIME_URL, lambda p, n: True))
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
        low_latency_mpd(text, MODE, TIME_URL, lambda p, n: asked.append((p, n)) or True)
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
    low_latency_mpd(odd, MODE, TIME_URL, lambda p, n: asked.append((p, n)) or True)
    assert asked == []


def test_service_description_and_utc_timing():
    text = mpd(
        '<Period id="0"><AdaptationSet>'
        + rep("0", '<S t="0" d="15360"/>')
        + "</AdaptationSet></Period>"
        '<UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-xsdate:2014" value="/streams/time/"/>',
        extra='<ServiceDescription id="0"></ServiceDescription>',  # FFmpeg writes it empty
    )
    root = ET.fromstring(low_latency_mpd(text, MODE, TIME_URL, lambda p, n: False))
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
    root = ET.fromstring(low_latency_mpd(bare, MODE, TIME_URL, lambda p, n: False))
    tags = [child.tag.split("}")[1] for child in root]
    assert tags.index("ServiceDescription") < tags.index("Period")


def test_static_mpds_are_left_as_written():
    text = mpd(
        '<Period id="0"><AdaptationSet>'
        + rep("0", '<S t="0" d="15360"/>')
        + "</AdaptationSet></Period>",
        kind="static",
    )
    assert low_latency_mpd(text, MODE, TIME_URL, lambda p, n: True) == text


def test_media_names():
    template = "chunk-stream$RepresentationID$-$Number%05d$.m4s"
    assert media_name(template, "2", 17) == "chunk-stream2-00017.m4s"
    assert media_name("seg-$Number$.m4s", "0", 3) == "seg-3.m4s"
    assert media_name("seg-$Time$.m4s", "0", 3) is None
    assert media_name("../x-$Number$.m4s", "0", 3) is None
