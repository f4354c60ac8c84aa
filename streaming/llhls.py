"""LL-HLS media playlists (draft-pantos-hls-rfc8216bis) for low-latency stream folders.

The app already serves each rendition's media playlist (FFmpeg's, or the one
streaming/runs.py stitched after a restart) with ``PROGRAM-DATE-TIME`` on the capture
clock. FFmpeg lists complete segments only; the segment being written grows as
``<segment>.m4s.tmp``, one fragment (moof+mdat) per part (streaming/fmp4.py). This module
turns that playlist plus the fragments of the last segments into an LL-HLS playlist:

* ``EXT-X-PART`` for every fragment of the last ``PART_SEGMENTS`` complete segments and of
  the segment being written: byte ranges of the segment's own URI (the growing file is
  served under its final name, streaming/growing.py), ``INDEPENDENT=YES`` when the
  fragment starts with a sync sample. Older segments carry no parts (the spec: parts more
  than three target durations from the end SHOULD go);
* ``EXT-X-PART-INF:PART-TARGET`` from the folder's mode only, never from observed parts
  (players break when it changes): the encoder closes a fragment at the first frame that
  starts at or after ``part_target``, so a part lasts less than ``part_target`` plus one
  frame; the longest frame is an AAC frame at 48 kHz (1024 samples, 21.3 ms; video is
  CFR with a frame rate whose frames tile the part target, e.g. 30 fps: 6 frames);
* ``EXT-X-SERVER-CONTROL``: ``CAN-BLOCK-RELOAD=YES`` (hls.js sends ``_HLS_msn`` only then),
  ``PART-HOLD-BACK`` = 3 x ``PART-TARGET`` (the spec's SHOULD; hls.js plays that far from
  the edge), ``CAN-SKIP-UNTIL`` = 6 x target duration (the spec's minimum);
* ``EXT-X-PRELOAD-HINT`` for the next part (always: hls.js loops without one, as MediaMTX
  found) and ``EXT-X-RENDITION-REPORT`` for the other renditions;
* a segment renamed but not yet listed by the playlist (FFmpeg or the stitcher has not
  rewritten it yet) is listed here, so the edge never goes back;
* delta updates (``_HLS_skip=YES``): segments whose end is ``CAN-SKIP-UNTIL`` or more
  before the end are replaced by ``EXT-X-SKIP`` (never past a discontinuity: players
  number discontinuities from the tags they see), version 9; with nothing to skip, the
  full playlist.

A playlist with ``EXT-X-ENDLIST`` (the stream ended: VOD) is returned unchanged: no
parts, no hint, no server control, delivery directives ignored (the spec's rules).

Delivery directives (``parse_directives``, ``check_directives``): ASCII digits only, at
most ``MAX_DIGITS``; ``_HLS_part`` without ``_HLS_msn``, an msn more than two beyond the
last complete segment, a part index no segment can have or more than the Advance Part
Limit (3 / PART-TARGET parts) beyond the last part (part limits only for a segment not
yet complete): ``BadDirective`` (400).
``satisfied`` says whether a playlist answers a blocking request (a part index past the
final part of a complete segment means part 0 of the next one, as the spec says).

Pure: text and fragment lists in, text out; the caller reads the files
(streaming/llhls_serve.py). Limits: one ``EXT-X-MAP`` per run, media segments named
``[run<k>/]chunk-stream<rep>-<n>.m4s`` as FFmpeg's dash muxer names them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streaming.clock import SEGMENT_URI_RE, iso_ms
from streaming.fmp4 import Fragment
from streaming.lowlatency import LowLatency

#: Longest frame a part can run over the part target by: an AAC frame at 48 kHz.
FRAME_ALLOWANCE = 1024 / 48000
PART_SEGMENTS = 2  # complete segments that keep their parts, besides the one being written
HOLD_BACK_PARTS = 3  # PART-HOLD-BACK in part targets (spec: SHOULD be at least 3)
SKIP_TARGETS = 6  # CAN-SKIP-UNTIL in target durations (spec: MUST be at least 6)
MAX_DIGITS = 9  # a directive's value: 1e9 segments of 1 s are 31 years
DIRECTIVES = ("_HLS_msn", "_HLS_part", "_HLS_skip")
SKIP_VALUES = ("YES", "v2")
DIGITS_RE = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")
ATTR_URI_RE = re.compile(r'URI="([^"]*)"')
HEADER_TAGS = (
    "#EXTM3U",
    "#EXT-X-VERSION:",
    "#EXT-X-TARGETDURATION:",
    "#EXT-X-MEDIA-SEQUENCE:",
    "#EXT-X-DISCONTINUITY-SEQUENCE:",
    "#EXT-X-PLAYLIST-TYPE:",
    "#EXT-X-INDEPENDENT-SEGMENTS",
    "#EXT-X-START:",
    "#EXT-X-SERVER-CONTROL:",
    "#EXT-X-PART-INF:",
)
# Tags this module writes itself (dropped if the source had them).
OWN_TAGS = (
    "#EXT-X-SERVER-CONTROL:",
    "#EXT-X-PART-INF:",
    "#EXT-X-PART:",
    "#EXT-X-PRELOAD-HINT:",
    "#EXT-X-RENDITION-REPORT:",
    "#EXT-X-SKIP:",
)


class BadDirective(ValueError):
    """A delivery directive the server refuses (HTTP 400); the message says why."""


# --- the mode's constants -----------------------------------------------------------------
def part_target(mode: LowLatency) -> float:
    """``PART-TARGET`` (s) for a folder's mode: constant for the stream, in whole ms."""
    return math.ceil((mode.part_target + FRAME_ALLOWANCE) * 1000 - 1e-6) / 1000


def part_hold_back(mode: LowLatency) -> float:
    return math.ceil(HOLD_BACK_PARTS * part_target(mode) * 1000 - 1e-6) / 1000


def advance_part_limit(mode: LowLatency) -> int:
    """The spec's Advance Part Limit: 3 / PART-TARGET parts if under 1 s, else 3."""
    target = part_target(mode)
    return int(3 / target) if target < 1 else 3


def max_parts(mode: LowLatency) -> int:
    """More parts than a segment can have: its target over the shortest non-final part
    (85% of PART-TARGET, the spec's minimum), doubled for a late keyframe."""
    return 2 * math.ceil(mode.segment_target / (0.85 * part_target(mode))) + 1


def _seconds(value: float) -> str:
    return f"{value:.5f}".rstrip("0").rstrip(".") if value else "0"


# --- parsing the served playlist ----------------------------------------------------------
@dataclass
class Segment:
    msn: int
    uri: str
    tags: list[str]  # media segment tags before it (MAP, DISCONTINUITY, PDT...), no EXTINF
    duration: float
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True)
class Part:
    uri: str
    offset: int
    length: int
    duration: float  # s
    independent: bool


@dataclass
class Playlist:
    header: list[str]
    target_duration: int
    media_sequence: int
    segments: list[Segment]
    pending: list[str]  # segment tags after the last URI (a new run's MAP, a discontinuity)
    ended: bool
    version: int

    @property
    def map_uri(self) -> str | None:
        """The ``EXT-X-MAP`` in effect at the end (the live run's init segment)."""
        for line in reversed([*(t for s in self.segments for t in s.tags), *self.pending]):
            if line.startswith("#EXT-X-MAP:"):
                found = ATTR_URI_RE.search(line)
                return found[1] if found else None
        return None

    @property
    def run_prefix(self) -> str:
        """``run<k>/`` of the live run ('' for the stream folder itself)."""
        uri = self.map_uri or ""
        return uri.rsplit("/", 1)[0] + "/" if "/" in uri else ""


def _int_after(line: str) -> int:
    try:
        return int(line.split(":", 1)[1].strip())
    except (IndexError, ValueError):
        return 0


def parse_playlist(text: str) -> Playlist:
    header: list[str] = []
    segments: list[Segment] = []
    tags: list[str] = []
    duration = 0.0
    target, sequence, version, ended = 1, 0, 0, False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith(OWN_TAGS):
                continue
            if line.startswith("#EXT-X-ENDLIST"):
                ended = True
            elif line.startswith("#EXT-X-VERSION:"):
                version = _int_after(line)
            elif line.startswith(HEADER_TAGS):
                if line.startswith("#EXT-X-TARGETDURATION:"):
                    target = max(1, _int_after(line))
                elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                    sequence = _int_after(line)
                if line != "#EXTM3U":
                    header.append(line)
            elif line.startswith("#EXTINF:"):
                try:
                    duration = float(line[8:].split(",", 1)[0])
                except ValueError:
                    duration = 0.0
            else:
                tags.append(line)
            continue
        segments.append(Segment(sequence + len(segments), line, tags, duration))
        tags, duration = [], 0.0
    return Playlist(header, target, sequence, segments, tags, ended, version)


# --- the live edge ------------------------------------------------------------------------
@dataclass(frozen=True)
class Tail:
    """A segment near the live edge as read from disk.

    ``uri`` as the playlist names it (``run<k>/`` included); ``complete``: renamed, its
    bytes final; ``end``: where its complete fragments end (the next part's offset);
    ``start_ms``: capture-clock time of its first sample, if known (its PDT).
    """

    uri: str
    fragments: tuple[Fragment, ...]
    complete: bool
    end: int
    size: int
    start_ms: int | None = None


@dataclass(frozen=True)
class Report:
    """Another rendition's edge, for its ``EXT-X-RENDITION-REPORT``."""

    uri: str
    last_msn: int
    last_part: int | None


@dataclass
class LiveView:
    """The playlist at the live edge: listed segments (some self-listed), parts of the last
    ones, and the segment being written (its parts and the next part's offset)."""

    playlist: Playlist
    mode: LowLatency
    segments: list[Segment]
    current_msn: int  # the segment being written (or about to be)
    current_uri: str
    current_parts: tuple[Part, ...]
    current_tags: list[str]
    hint_offset: int
    final_parts: dict[int, int] = field(default_factory=dict)  # msn -> parts (complete)

    @property
    def last_msn(self) -> int:
        """The last complete segment's msn (media sequence - 1 when none)."""
        return self.current_msn - 1

    @property
    def last_part(self) -> tuple[int, int] | None:
        """(msn, index) of the last part listed, or None (no parts yet)."""
        if self.current_parts:
            return self.current_msn, len(self.current_parts) - 1
        for segment in reversed(self.segments):
            if segment.parts:
                return segment.msn, len(segment.parts) - 1
            break
        return None

    def report(self, uri: str) -> Report:
        last = self.last_part
        if last is None:
            return Report(uri, self.last_msn, None)
        return Report(uri, last[0], last[1])


def _parts(uri: str, fragments: Sequence[Fragment], timescale: int) -> tuple[Part, ...]:
    return tuple(
        Part(uri, f.offset, f.length, f.duration / timescale, f.independent) for f in fragments
    )


def _tiles(tail: Tail) -> bool:
    """The fragments cover the file from its first byte (parts concatenated = segment)."""
    position = 0
    for fragment in tail.fragments:
        if fragment.offset != position:
            return False
        position += fragment.length
    return position == tail.end and (not tail.complete or tail.end == tail.size)


def segment_name(uri: str) -> tuple[str, int, int] | None:
    """``[run<k>/]chunk-stream<rep>-<n>.m4s`` → (prefix, rep, n)."""
    found = SEGMENT_URI_RE.match(uri)
    if not found:
        return None
    return (found[1] + "/" if found[1] else ""), int(found[2]), int(found[3])


def segment_uri(prefix: str, rep: int, number: int) -> str:
    return f"{prefix}chunk-stream{rep}-{number:05d}.m4s"


def live_view(
    playlist: Playlist, tails: Sequence[Tail], timescale: int, mode: LowLatency, rep: int
) -> LiveView:
    """The playlist plus what the tails add: parts, self-listed segments, the current one.

    ``tails``: the last listed segments then the unlisted ones in order (complete ones,
    then at most one being written); any may be missing (not read).
    """
    segments = list(playlist.segments)
    by_uri = {segment.uri: index for index, segment in enumerate(segments)}
    prefix = playlist.run_prefix
    last = segment_name(segments[-1].uri) if segments else None
    number = last[2] if last and last[0] == prefix else 0  # last listed in the live run
    pending = list(playlist.pending)
    current: Tail | None = None
    final_parts: dict[int, int] = {}
    for tail in tails:
        usable = timescale > 0 and _tiles(tail)
        if tail.uri in by_uri:
            segment = segments[by_uri[tail.uri]]
            if usable and tail.complete:
                segment.parts = _parts(tail.uri, tail.fragments, timescale)
                final_parts[segment.msn] = len(segment.parts)
            continue
        if tail.uri != segment_uri(prefix, rep, number + 1):
            continue  # not the next one: ignore (read out of order, or another run)
        if tail.complete:
            if not usable or not tail.fragments:
                break  # a finished segment we cannot time: wait for the playlist
            msn = playlist.media_sequence + len(segments)
            tags = list(pending)
            if tail.start_ms is not None:
                tags.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso_ms(tail.start_ms)}")
            parts = _parts(tail.uri, tail.fragments, timescale)
            duration = sum(part.duration for part in parts)
            segments.append(Segment(msn, tail.uri, tags, duration, parts))
            final_parts[msn] = len(parts)
            pending, number = [], number + 1
        else:
            current = tail if usable else None
            break
    for segment in segments[: -PART_SEGMENTS or None]:
        segment.parts = ()  # parts of the last segments only
    current_msn = playlist.media_sequence + len(segments)
    current_uri = segment_uri(prefix, rep, number + 1)
    current_parts: tuple[Part, ...] = ()
    hint = 0
    if current is not None:
        current_parts = _parts(current.uri, current.fragments, timescale)
        hint = current.end
        if current.start_ms is not None and current.fragments:
            pending.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso_ms(current.start_ms)}")
    return LiveView(
        playlist,
        mode,
        segments,
        current_msn,
        current_uri,
        current_parts,
        pending,
        hint,
        final_parts,
    )


# --- rendering ----------------------------------------------------------------------------
def _part_line(part: Part) -> str:
    line = (
        f'#EXT-X-PART:DURATION={_seconds(part.duration)},URI="{part.uri}",'
        f'BYTERANGE="{part.length}@{part.offset}"'
    )
    return line + (",INDEPENDENT=YES" if part.independent else "")


def skipped_segments(view: LiveView) -> int:
    """How many leading segments a delta update replaces: those ending ``CAN-SKIP-UNTIL``
    or more before the last segment's end, and none at or after a discontinuity."""
    boundary = SKIP_TARGETS * view.playlist.target_duration
    total = sum(segment.duration for segment in view.segments)
    end, count = 0.0, 0
    for index, segment in enumerate(view.segments):
        end += segment.duration
        if total - end < boundary - 1e-9:
            break
        if index and "#EXT-X-DISCONTINUITY" in segment.tags:
            break
        count = index + 1
    return count


def render(view: LiveView, reports: Sequence[Report] = (), skip: str | None = None) -> str:
    """The LL-HLS playlist; ``skip`` ("YES" or "v2"): the delta update."""
    mode, playlist = view.mode, view.playlist
    skipped = skipped_segments(view) if skip else 0
    if not skipped:
        skip = None  # nothing to skip: the full playlist (no EXT-X-SKIP, no version 9)
    version = (10 if skip == "v2" else 9) if skip else max(playlist.version, 6)
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", *playlist.header]
    lines.append(
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
        f"PART-HOLD-BACK={_seconds(part_hold_back(mode))},"
        f"CAN-SKIP-UNTIL={_seconds(SKIP_TARGETS * playlist.target_duration)}"
    )
    lines.append(f"#EXT-X-PART-INF:PART-TARGET={_seconds(part_target(mode))}")
    if skip:
        extra = ',RECENTLY-REMOVED-DATERANGES=""' if skip == "v2" else ""
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}{extra}")
    map_line = None
    for index, segment in enumerate(view.segments):
        maps = [tag for tag in segment.tags if tag.startswith("#EXT-X-MAP:")]
        map_line = maps[-1] if maps else map_line
        if index < skipped:
            continue
        tags = list(segment.tags)
        if index == skipped and skipped and not maps and map_line:
            tags.insert(0, map_line)  # the init segment in effect, whose tag was skipped
        lines.extend(tags)
        lines.extend(_part_line(part) for part in segment.parts)
        lines.append(f"#EXTINF:{segment.duration:.6f},")
        lines.append(segment.uri)
    lines.extend(view.current_tags)
    lines.extend(_part_line(part) for part in view.current_parts)
    lines.append(
        f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{view.current_uri}",BYTERANGE-START={view.hint_offset}'
    )
    for report in reports:
        line = f'#EXT-X-RENDITION-REPORT:URI="{report.uri}",LAST-MSN={report.last_msn}'
        if report.last_part is not None:
            line += f",LAST-PART={report.last_part}"
        lines.append(line)
    return "\n".join(lines) + "\n"


# --- delivery directives ------------------------------------------------------------------
@dataclass(frozen=True)
class Directives:
    msn: int | None = None
    part: int | None = None
    skip: str | None = None  # "YES" or "v2"

    @property
    def blocking(self) -> bool:
        return self.msn is not None


def parse_directives(query: Mapping[str, Sequence[str]]) -> Directives:
    """``_HLS_msn`` / ``_HLS_part`` / ``_HLS_skip`` from a query (name → values); other
    parameters are ignored. ``BadDirective`` for a repeated, malformed or lone part."""
    values: dict[str, str] = {}
    for name in DIRECTIVES:
        given = list(query.get(name, ()))
        if len(given) > 1:
            raise BadDirective(f"{name} given more than once")
        if given:
            values[name] = given[0]
    numbers: dict[str, int] = {}
    for name in ("_HLS_msn", "_HLS_part"):
        if name in values:
            if not DIGITS_RE.fullmatch(values[name]):
                raise BadDirective(
                    f"{name} must be a decimal integer of 1 to {MAX_DIGITS} ASCII digits"
                )
            numbers[name] = int(values[name])
    skip = values.get("_HLS_skip")
    if skip is not None and skip not in SKIP_VALUES:
        raise BadDirective("_HLS_skip must be YES or v2")
    if "_HLS_part" in numbers and "_HLS_msn" not in numbers:
        raise BadDirective("_HLS_part needs _HLS_msn")
    return Directives(numbers.get("_HLS_msn"), numbers.get("_HLS_part"), skip)


def check_directives(view: LiveView, directives: Directives) -> None:
    """``BadDirective`` for a blocking request the live edge will not reach soon.

    Part limits apply to the segment being written and later ones only: a request naming a
    complete segment is answered at once (``satisfied``), whatever its part index."""
    if directives.msn is None:
        return
    mode = view.mode
    if directives.msn > view.last_msn + 2:
        raise BadDirective(
            f"_HLS_msn={directives.msn} is more than two segments beyond the last ({view.last_msn})"
        )
    if directives.part is None or directives.msn < view.current_msn:
        return  # a complete segment: any part of it (or the next one's part 0) is there
    if directives.part >= max_parts(mode):
        raise BadDirective(
            f"_HLS_part={directives.part}: a segment has fewer than {max_parts(mode)} parts"
        )
    last = view.last_part or (view.last_msn, max(0, view.final_parts.get(view.last_msn, 1) - 1))
    per_segment = math.ceil(mode.segment_target / mode.part_target)
    ahead = (directives.msn - last[0]) * per_segment + directives.part - last[1]
    if ahead > advance_part_limit(mode):
        raise BadDirective(
            f"_HLS_msn={directives.msn}&_HLS_part={directives.part} is more than "
            f"{advance_part_limit(mode)} parts beyond the last part ({last[0]}.{last[1]})"
        )


def satisfied(view: LiveView, directives: Directives) -> bool:
    """Whether this playlist answers the blocking request (the spec's 6.2.5.2)."""
    msn, part = directives.msn, directives.part
    if msn is None or view.playlist.ended:
        return True
    if part is None:
        return view.last_msn >= msn  # a complete segment M or later
    if msn < view.last_msn:
        return True  # M + 1 is complete: part N of M, or part 0 of M + 1, is there
    if msn == view.last_msn:
        final = view.final_parts.get(msn)
        if final is None or part < final:
            return True
        return bool(view.current_parts)  # past its last part: part 0 of the next one
    if msn == view.current_msn:
        return len(view.current_parts) > part
    return False
