"""The MPD of a low-latency stream (LL-DASH), from the one FFmpeg (or streaming/runs.py) wrote.

dash.js 5 plays a live MPD in low-latency mode only when the representation says
``availabilityTimeComplete="false"``; only then does it load segments with its streaming
fetch loader, reading each chunk as it arrives (streaming/growing.py sends them as they are
written). What this adds, on the last Period only (the live run; earlier Periods are
closed runs, complete), and only while the MPD is ``dynamic`` (an ended stream's static MPD
is served as written):

* segments already closed but not listed yet, with their duration from their fragments
  (after an encoder restart runs.py stitches the MPD on the pipeline's tick, so a closed
  segment can wait up to a tick to be listed: the MPD must not lose what the previous one
  announced), then the segment being written and the one after it, in each
  ``SegmentTimeline``: FFmpeg lists complete segments only, and dash.js requests a timeline
  segment only if it is listed (TimelineSegmentsGetter) and its availability start has
  passed (SegmentsUtils: ``AST + end - availabilityTimeOffset <= now``). Listing the next
  one too means a player that re-reads the MPD once per ``minimumUpdatePeriod`` (one
  segment) still finds the segment it needs when the current one closes, instead of
  waiting for the next reload; the availability time keeps it from asking before that
  segment's first chunk is due, and the origin holds an early request until it is there.
  DASH-IF IOP wants ``S`` durations exact, and the next MPD must not change what this
  one announced: video segments are the segment target; audio ones are whole AAC frames
  closed with the video's, their length predicted from the listed ones (``_predict``:
  in the muxer's pattern, exact from a run's first segment a frame short on; only that
  one is announced wrong, and the next MPD corrects it). The nominal duration is no AAC segment's.
* ``availabilityTimeOffset`` = segment target - part target on each ``SegmentTemplate``: a
  segment is available once its first chunk is (DASH-IF low-latency guidelines; livesim2
  does the same), and ``availabilityTimeComplete="false"``.
* a ``ServiceDescription`` (FFmpeg writes an empty one): ``Latency`` target/min/max in ms
  and ``PlaybackRate`` min/max, which dash.js applies as its live delay and catch-up
  bounds unless the page sets its own.
* ``UTCTiming`` ``urn:mpeg:dash:utc:http-xsdate:2014`` at this site's ``/streams/time/``
  (an absolute URL on the origin the request came to): dash.js would otherwise ask an
  internet time server; the page must never contact one.

``low_latency_mpd`` is pure: text in, text out (its ``on_disk`` callback says what the
folder holds of a segment); ``on_disk(base)`` is that callback on a stream folder.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from streaming.fmp4 import fragments
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
#: closed segments listed past the MPD's own listing at most (runs.py lags a tick, one
#: segment; a listing further behind is not the live edge this is for, and each is read)
CATCH_UP_MAX = 2


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


@dataclass(frozen=True)
class OnDisk:
    """What the origin's folder holds of a segment the MPD does not list yet."""

    complete: bool  # renamed to its final name (closed); False: its ``.tmp`` is being written
    duration: int | None = None  # complete: its fragments' total, in the timescale


@dataclass
class _Track:
    """One Representation's SegmentTimeline in the live Period."""

    template: ET.Element
    timeline: ET.Element
    name: Callable[[int], str | None]  # segment number -> file name
    timescale: int
    start_number: int
    first_start: int  # start time of the first listed segment
    ends: list[int]  # end time of each listed segment, in order from start_number
    video: bool
    frame: int | None  # samples per audio frame (FRAME_SAMPLES), when known


#: samples per frame of an audio codec FFmpeg's dash muxer is given (streaming/ffmpeg.py:
#: AAC-LC), in the sample-rate timescale the muxer uses for audio
FRAME_SAMPLES = {"mp4a.40.2": 1024, "opus": 960}


def _track(template: ET.Element, rep: ET.Element, adaptation: ET.Element) -> _Track | None:
    timeline = template.find("mpd:SegmentTimeline", NS)
    media = template.get("media")
    if timeline is None or media is None:
        return None
    try:
        timescale = int(template.get("timescale", "1"))
        start_number = int(template.get("startNumber", "1"))
        ends: list[int] = []
        time = 0
        for s in timeline.findall("mpd:S", NS):
            time = int(s.get("t", time))
            repeat = int(s.get("r", "0"))
            if repeat < 0:
                return None  # an open-ended repeat already reaches the present
            for _ in range(repeat + 1):
                time += int(s.get("d", ""))
                ends.append(time)
    except ValueError:
        return None
    if not ends or timescale <= 0:
        return None  # no segment complete yet: its start time is not known from the MPD
    rep_id = rep.get("id", "")
    kind = rep.get("mimeType") or adaptation.get("mimeType") or ""
    video = kind.startswith("video/") or adaptation.get("contentType") == "video"
    codec = (rep.get("codecs") or adaptation.get("codecs") or "").split(",")[0]
    return _Track(
        template,
        timeline,
        lambda number: media_name(media, rep_id, number),
        timescale,
        start_number,
        int(timeline.findall("mpd:S", NS)[0].get("t", "0")),
        ends,
        video,
        None if video else FRAME_SAMPLES.get(codec),
    )


def _gap(track: _Track, clock: _Track, index: int, nominal: Fraction) -> Fraction:
    """Audio end minus video end of the segment at ``track.ends[index]``, in audio units
    (outside the video's listing, its ends one nominal segment apart)."""
    number = track.start_number + index
    at = number - clock.start_number
    if at < 0:  # before the video's listing (not FFmpeg's: its windows are aligned)
        video = Fraction(clock.first_start, clock.timescale) + (at + 1) * nominal
    else:
        extra = max(0, at - len(clock.ends) + 1)
        last = clock.ends[min(at, len(clock.ends) - 1)]
        video = Fraction(last, clock.timescale) + extra * nominal
    return track.ends[index] - video * track.timescale


def _predict(track: _Track, clock: _Track | None, nominal: Fraction) -> int:
    """The duration of the next segment of ``track`` before it is complete.

    Video: the segment target (whole frames, a keyframe forced at each target). Audio: the
    dash muxer closes an audio segment with the video's, at an audio frame boundary, so
    most are one length (``longest``: 47 AAC frames at 48 kHz and 1 s) and now and then
    one is a frame shorter, when the audio end would otherwise get too far past the
    video's: the audio end minus the video end (the gap) grows by ``longest`` - nominal
    per segment, up to a fixed bound. The bound is known once the listing holds a short
    segment (the gap before it), and from then on each prediction is exact; before that
    (a run's first segments) ``longest`` is predicted, and the next MPD corrects the one
    short segment that may come first. A run's first segment is left out (it starts with
    the encoder's priming); with it alone listed, the whole frames that cover the target.
    """
    units = nominal * track.timescale
    if track.video or clock is None:
        return max(1, round(units))
    starts = [track.first_start, *track.ends[:-1]]
    skip = 1 if track.start_number == 1 else 0  # the run's first segment
    durations = [end - start for start, end in zip(starts, track.ends, strict=True)][skip:]
    if not durations:
        frame = track.frame
        return max(1, round(units) if frame is None else frame * math.ceil(units / frame))
    longest = max(durations)
    shorter = [d for d in durations if d < longest]
    if not shorter:
        return longest
    gaps = [_gap(track, clock, i, nominal) for i in range(skip, len(track.ends))]
    before_short = [g - d + units for g, d in zip(gaps, durations, strict=True) if d < longest]
    bound = max(*before_short, *gaps)
    return longest if gaps[-1] + longest - units <= bound else max(shorter)


def _announce(track: _Track, clock: _Track | None, mode: LowLatency, on_disk) -> None:
    """Extend the timeline past FFmpeg's listing: segments already closed but not listed
    yet (after an encoder restart runs.py stitches the MPD on the pipeline's tick, so a
    closed segment can wait a tick for it), then the one being written and the next."""
    nominal = Fraction(mode.segment_target).limit_denominator(1000)
    number = track.start_number + len(track.ends)
    end = track.ends[-1]
    added: list[int] = []
    for _ in range(CATCH_UP_MAX + 1):
        name = track.name(number)
        state = on_disk(name) if name is not None else None
        if state is None or not state.complete or len(added) == CATCH_UP_MAX:
            break
        duration = state.duration or _predict(track, clock, nominal)
        added.append(duration)
        track.ends.append(end := end + duration)
        number += 1
    if state is not None and not state.complete:  # being written: it and the one after
        for _ in range(2):
            duration = _predict(track, clock, nominal)
            added.append(duration)
            track.ends.append(end := end + duration)
            number += 1
    for duration in added:
        last = track.timeline.findall("mpd:S", NS)[-1]
        if last.get("d") == str(duration):
            last.set("r", str(int(last.get("r", "0")) + 1))
        else:
            ET.SubElement(track.timeline, _q("S"), {"d": str(duration)})


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


def on_disk(base: Path) -> Callable[[str, str], OnDisk | None]:
    """The ``on_disk`` argument of ``low_latency_mpd`` for the stream folder ``base``
    (reads the disk: a closed segment's bytes for its duration, else a ``.tmp``'s stat)."""

    def state(run_prefix: str, name: str) -> OnDisk | None:
        folder = base / run_prefix if run_prefix else base
        try:
            data = (folder / name).read_bytes()
        except FileNotFoundError:
            return OnDisk(complete=False) if (folder / f"{name}.tmp").exists() else None
        except OSError:
            return None
        found, _complete = fragments(data)
        return OnDisk(complete=True, duration=sum(f.duration for f in found) or None)

    return state


def low_latency_mpd(
    text: str, mode: LowLatency, time_url: str, on_disk: Callable[[str, str], OnDisk | None]
) -> str:
    """``text`` with the LL-DASH additions; ``on_disk(run_prefix, name)``: whether
    ``<run_prefix><name>`` is closed (and its duration) or its ``.tmp`` is being written
    (None: neither); ``on_disk(base)`` answers it from a stream folder."""
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
        tracks: list[_Track] = []
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
                if prefix is not None and (track := _track(template, rep, adaptation)):
                    tracks.append(track)
        clock = next((track for track in tracks if track.video), None)
        for track in sorted(tracks, key=lambda track: not track.video):  # the clock first
            _announce(track, clock, mode, lambda name, p=prefix: on_disk(p, name))
    _service_description(root, mode)
    for timing in root.findall("mpd:UTCTiming", NS):
        root.remove(timing)
    ET.SubElement(root, _q("UTCTiming"), {"schemeIdUri": UTC_SCHEME, "value": time_url})
    ET.indent(root, space="\t")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
