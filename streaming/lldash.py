"""The MPD of a low-latency stream (LL-DASH), from the one FFmpeg (or streaming/runs.py) wrote.

dash.js 5 plays a live MPD in low-latency mode only when the representation says
``availabilityTimeComplete="false"``; only then does it load segments with its streaming
fetch loader, reading each chunk as it arrives (streaming/growing.py sends them as they are
written). What this adds, on the last Period only (the live run; earlier Periods are
closed runs, complete), and only while the MPD is ``dynamic`` (an ended stream's static MPD
is served as written):

* the segment being written, and the one after it, in each ``SegmentTimeline`` with the
  nominal duration: FFmpeg lists complete segments only, and dash.js requests a timeline
  segment only if it is listed (TimelineSegmentsGetter) and its availability start has
  passed (SegmentsUtils: ``AST + end - availabilityTimeOffset <= now``). Listing the next
  one too means a player that re-reads the MPD once per ``minimumUpdatePeriod`` (one
  segment) still finds the segment it needs when the current one closes, instead of
  waiting for the next reload; the availability time keeps it from asking before that
  segment's first chunk is due, and the origin holds an early request until it is there.
  The listed duration is corrected by the next MPD once the segment is complete (audio
  segments are a few ms off the nominal one).
* ``availabilityTimeOffset`` = segment target - part target on each ``SegmentTemplate``: a
  segment is available once its first chunk is (DASH-IF low-latency guidelines; livesim2
  does the same), and ``availabilityTimeComplete="false"``.
* a ``ServiceDescription`` (FFmpeg writes an empty one): ``Latency`` target/min/max in ms
  and ``PlaybackRate`` min/max, which dash.js applies as its live delay and catch-up
  bounds unless the page sets its own.
* ``UTCTiming`` ``urn:mpeg:dash:utc:http-xsdate:2014`` at this site's ``/streams/time/``
  (an absolute URL on the origin the request came to): dash.js would otherwise ask an
  internet time server; the page must never contact one.

Pure: text in, text out (``writing`` says whether a segment's ``.tmp`` exists).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable

from streaming.lowlatency import LowLatency
from streaming.playlists import MPD_NS, NS

UTC_SCHEME = "urn:mpeg:dash:utc:http-xsdate:2014"
#: live delay dash.js aims at, in parts: the newest chunk is about one part plus the
#: ingest and encode delay old when it is complete; the rest is the player's buffer
TARGET_PARTS = 4
MIN_PARTS = 2
PLAYBACK_RATE = (0.96, 1.04)  # catch-up bounds (DASH-IF's example values: pitch barely moves)
NUMBER_RE = re.compile(r"\$Number(?:%0(\d+)d)?\$")
RUN_BASE_RE = re.compile(r"^run[1-9][0-9]{0,5}/$")


def _q(tag: str) -> str:
    return f"{{{MPD_NS}}}{tag}"


def latency_ms(mode: LowLatency) -> tuple[int, int, int]:
    """(target, min, max) for ``ServiceDescription/Latency``. Max: a segment beyond the
    target (dash.js seeks back to the live edge when the drift passes max - target + 0.5 s)."""
    target = round(1000 * TARGET_PARTS * mode.part_target)
    return (
        target,
        round(1000 * MIN_PARTS * mode.part_target),
        target + round(1000 * mode.segment_target),
    )


def media_name(template: str, rep_id: str, number: int) -> str | None:
    """A ``SegmentTemplate@media`` filled in (``$RepresentationID$``, ``$Number[%0Nd]$``)."""
    if "$Time$" in template:
        return None  # FFmpeg's templates use numbers; a time template names no next file
    name = template.replace("$RepresentationID$", rep_id)
    name = NUMBER_RE.sub(lambda m: f"{number:0{int(m[1] or 1)}d}", name)
    return None if "$" in name or "/" in name else name


def _announce(template: ET.Element, rep_id: str, mode: LowLatency, writing) -> None:
    timeline = template.find("mpd:SegmentTimeline", NS)
    media = template.get("media")
    if timeline is None or media is None:
        return
    entries = timeline.findall("mpd:S", NS)
    if not entries:
        return  # no segment complete yet: its start time is not known from the MPD
    try:
        count = sum(int(s.get("r", "0")) + 1 for s in entries)
        number = int(template.get("startNumber", "1")) + count
        timescale = int(template.get("timescale", "1"))
    except ValueError:
        return
    if any(int(s.get("r", "0")) < 0 for s in entries):
        return  # an open-ended repeat already reaches the present
    name = media_name(media, rep_id, number)
    if name is None or not writing(name):
        return
    nominal = max(1, round(mode.segment_target * timescale))
    last = entries[-1]
    if last.get("d") == str(nominal):
        last.set("r", str(int(last.get("r", "0")) + 2))
    else:
        ET.SubElement(timeline, _q("S"), {"d": str(nominal), "r": "1"})


def _service_description(root: ET.Element, mode: LowLatency) -> None:
    described = root.find("mpd:ServiceDescription", NS)
    if described is None:
        described = ET.Element(_q("ServiceDescription"), {"id": "0"})
        first_period = next(
            (i for i, child in enumerate(root) if child.tag == _q("Period")), len(root)
        )
        root.insert(first_period, described)
    for child in list(described):
        if child.tag in (_q("Latency"), _q("PlaybackRate")):
            described.remove(child)
    target, low, high = latency_ms(mode)
    ET.SubElement(
        described, _q("Latency"), {"target": str(target), "min": str(low), "max": str(high)}
    )
    ET.SubElement(
        described,
        _q("PlaybackRate"),
        {"min": f"{PLAYBACK_RATE[0]:g}", "max": f"{PLAYBACK_RATE[1]:g}"},
    )


def low_latency_mpd(
    text: str, mode: LowLatency, time_url: str, writing: Callable[[str, str], bool]
) -> str:
    """``text`` with the LL-DASH additions; ``writing(run_prefix, name)``: whether
    ``<run_prefix><name>.tmp`` (the segment being written) exists."""
    root = ET.fromstring(text)
    if root.tag != _q("MPD") or root.get("type") != "dynamic":
        return text
    periods = root.findall("mpd:Period", NS)
    if periods:
        period = periods[-1]
        base = period.find("mpd:BaseURL", NS)
        prefix = (base.text or "").strip() if base is not None else ""
        if prefix and not RUN_BASE_RE.match(prefix):
            prefix = None  # not one of streaming/runs.py's run folders: announce nothing
        offset = f"{mode.segment_target - mode.part_target:.3f}".rstrip("0").rstrip(".")
        for adaptation in period.findall("mpd:AdaptationSet", NS):
            shared = adaptation.find("mpd:SegmentTemplate", NS)
            for template in [shared] if shared is not None else []:
                template.set("availabilityTimeOffset", offset)
                template.set("availabilityTimeComplete", "false")
            for rep in adaptation.findall("mpd:Representation", NS):
                template = rep.find("mpd:SegmentTemplate", NS)
                if template is None:
                    continue
                template.set("availabilityTimeOffset", offset)
                template.set("availabilityTimeComplete", "false")
                if prefix is not None:
                    _announce(
                        template,
                        rep.get("id", ""),
                        mode,
                        lambda name, p=prefix: writing(p, name),
                    )
    _service_description(root, mode)
    for timing in root.findall("mpd:UTCTiming", NS):
        root.remove(timing)
    ET.SubElement(root, _q("UTCTiming"), {"schemeIdUri": UTC_SCHEME, "value": time_url})
    ET.indent(root, space="\t")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
