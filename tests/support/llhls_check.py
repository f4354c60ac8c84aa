"""An LL-HLS checker: the rules of draft-pantos-hls-rfc8216bis applied to live playlists
fetched over HTTP, for the integration tests.

Each ``check_*`` returns a list of problems (empty: passed), so a test can assert on all
of them at once and print every violation. What is checked:

* playlist rules (``check_playlist``): ``EXT-X-PART-INF`` whenever there are parts, part
  durations at most ``PART-TARGET`` and at least 85% of it (except a segment's last part,
  and the last listed part of the segment being written, which may turn out to be its last),
  ``PART-HOLD-BACK`` >= 3 x ``PART-TARGET``, ``CAN-SKIP-UNTIL`` >= 6 x
  target duration, a segment's parts contiguous from byte 0, PDT and MAP before a segment's
  first part, one preload hint at the end of the parts, version >= 9 with ``EXT-X-SKIP``,
  ended playlists without parts, hints or server control;
* parts of *complete* segments fetchable with their ranges, concatenated equal to the
  segment (``check_complete_parts``); parts of the segment being written
  (``check_in_progress_parts``) are served by streaming/growing.py;
* blocking reload (``check_blocking``): a request for a part the playlist did not list is
  held and answered with a playlist listing it (the state asked for, not an earlier one);
  400 for bad values (``check_bad_values``);
* delta updates (``check_delta``): the segments left cover at least ``CAN-SKIP-UNTIL``
  (the Skip Boundary), and the delta equals the full playlist of the same state with its
  first segments replaced by ``EXT-X-SKIP``.
"""

from __future__ import annotations

import http.client
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

ATTR_RE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attributes(line: str) -> dict[str, str]:
    body = line.split(":", 1)[1] if ":" in line else ""
    return {key: value.strip('"') for key, value in ATTR_RE.findall(body)}


@dataclass
class PartEntry:
    msn: int
    index: int
    uri: str
    duration: float
    length: int
    offset: int
    independent: bool


@dataclass
class SegmentEntry:
    msn: int
    uri: str
    duration: float
    parts: list[PartEntry] = field(default_factory=list)
    tags_before_parts: list[str] = field(default_factory=list)


@dataclass
class LLPlaylist:
    text: str
    version: int = 0
    target: int = 0
    media_sequence: int = 0
    skipped: int = 0
    part_target: float | None = None
    server_control: dict[str, str] = field(default_factory=dict)
    segments: list[SegmentEntry] = field(default_factory=list)
    current: list[PartEntry] = field(default_factory=list)  # parts of the segment written
    hints: list[dict[str, str]] = field(default_factory=list)
    reports: list[dict[str, str]] = field(default_factory=list)
    ended: bool = False
    order_problems: list[str] = field(default_factory=list)

    @property
    def parts(self) -> list[PartEntry]:
        return [p for s in self.segments for p in s.parts] + self.current

    @property
    def last_msn(self) -> int:
        return self.segments[-1].msn if self.segments else self.media_sequence - 1

    @property
    def last_part(self) -> tuple[int, int] | None:
        parts = self.parts
        return (parts[-1].msn, parts[-1].index) if parts else None

    def has_part(self, msn: int, index: int) -> bool:
        return any(p.msn == msn and p.index == index for p in self.parts)


def parse(text: str) -> LLPlaylist:
    playlist = LLPlaylist(text)
    pending_parts: list[PartEntry] = []
    duration = 0.0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        msn = playlist.media_sequence + playlist.skipped + len(playlist.segments)
        if line.startswith("#EXT-X-VERSION:"):
            playlist.version = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            playlist.target = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            playlist.media_sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-SKIP:"):
            playlist.skipped = int(attributes(line)["SKIPPED-SEGMENTS"])
        elif line.startswith("#EXT-X-PART-INF:"):
            playlist.part_target = float(attributes(line)["PART-TARGET"])
        elif line.startswith("#EXT-X-SERVER-CONTROL:"):
            playlist.server_control = attributes(line)
        elif line.startswith("#EXT-X-PART:"):
            attrs = attributes(line)
            length, _, offset = attrs.get("BYTERANGE", "0@0").partition("@")
            pending_parts.append(
                PartEntry(
                    msn,
                    len(pending_parts),
                    attrs["URI"],
                    float(attrs["DURATION"]),
                    int(length),
                    int(offset or 0),
                    attrs.get("INDEPENDENT") == "YES",
                )
            )
        elif line.startswith(("#EXT-X-PROGRAM-DATE-TIME:", "#EXT-X-MAP:", "#EXT-X-DISCONTINUITY")):
            if pending_parts:
                playlist.order_problems.append(
                    f"{line.split(':')[0]} after the first part of segment {msn}"
                )
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",", 1)[0])
        elif line.startswith("#EXT-X-PRELOAD-HINT:"):
            playlist.hints.append(attributes(line))
        elif line.startswith("#EXT-X-RENDITION-REPORT:"):
            playlist.reports.append(attributes(line))
        elif line.startswith("#EXT-X-ENDLIST"):
            playlist.ended = True
        elif not line.startswith("#"):
            playlist.segments.append(SegmentEntry(msn, line, duration, pending_parts))
            pending_parts, duration = [], 0.0
    playlist.current = pending_parts
    return playlist


# --- HTTP -----------------------------------------------------------------------------------
def get(
    url: str,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    sent: threading.Semaphore | None = None,
):
    """(status, lower-cased headers, body) of a GET sent exactly as given; ``sent`` is
    released once the request is sent (a caller in another thread knows it is out)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers=headers or {})
        if sent is not None:
            sent.release()
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def base_of(url: str) -> str:
    return url.split("?", 1)[0].rsplit("/", 1)[0] + "/"


def fetch(url: str) -> LLPlaylist:
    status, _headers, body = get(url)
    assert status == 200, f"{url}: {status} {body[:200]!r}"
    return parse(body.decode())


# --- rules ----------------------------------------------------------------------------------
def check_playlist(playlist: LLPlaylist) -> list[str]:
    problems = list(playlist.order_problems)
    if playlist.ended:
        for tag in ("#EXT-X-PART:", "#EXT-X-PART-INF", "#EXT-X-SERVER-CONTROL", "#EXT-X-PRELOAD"):
            if tag in playlist.text:
                problems.append(f"ended playlist has {tag}")
        if not playlist.text.rstrip().endswith("#EXT-X-ENDLIST"):
            problems.append("ended playlist does not end with #EXT-X-ENDLIST")
        return problems
    target = playlist.part_target
    if playlist.parts and target is None:
        problems.append("parts without #EXT-X-PART-INF")
    if target is None:
        return [*problems, "no PART-TARGET in a low-latency playlist"]
    control = playlist.server_control
    if control.get("CAN-BLOCK-RELOAD") != "YES":
        problems.append("no CAN-BLOCK-RELOAD=YES")
    hold_back = float(control.get("PART-HOLD-BACK", "0"))
    if hold_back < 3 * target - 1e-9:
        problems.append(f"PART-HOLD-BACK {hold_back} < 3 x PART-TARGET {target}")
    skip_until = float(control.get("CAN-SKIP-UNTIL", "0"))
    if skip_until and skip_until < 6 * playlist.target:
        problems.append(f"CAN-SKIP-UNTIL {skip_until} < 6 x target {playlist.target}")
    if playlist.skipped and playlist.version < 9:
        problems.append(f"EXT-X-SKIP with version {playlist.version}")
    groups = [s.parts for s in playlist.segments if s.parts] + [playlist.current]
    for parts in groups:
        position = 0
        for index, part in enumerate(parts):
            name = f"part {part.msn}.{part.index}"
            if part.duration > target + 1e-9:
                problems.append(f"{name}: {part.duration} s > PART-TARGET {target}")
            last = index == len(parts) - 1  # a segment's final part (or may become it)
            if part.duration < 0.85 * target and not last:
                problems.append(f"{name}: {part.duration} s < 85% of PART-TARGET")
            if part.offset != position:
                problems.append(f"{name}: starts at {part.offset}, expected {position}")
            position = part.offset + part.length
            if part.uri != parts[0].uri:
                problems.append(f"{name}: URI {part.uri} differs from its segment's")
    for segment in playlist.segments:
        if segment.parts:
            total = sum(p.duration for p in segment.parts)
            if abs(total - segment.duration) > 0.002:
                problems.append(f"segment {segment.msn}: parts {total} s != EXTINF")
    if len(playlist.hints) != 1:
        problems.append(f"{len(playlist.hints)} preload hints")
    elif playlist.current:
        last = playlist.current[-1]
        hint = playlist.hints[0]
        if hint.get("URI") != last.uri or int(hint.get("BYTERANGE-START", 0)) != (
            last.offset + last.length
        ):
            problems.append(f"preload hint {hint} does not follow the last part")
    return problems


def check_complete_parts(url: str, playlist: LLPlaylist) -> list[str]:
    """Every listed part of every complete segment: fetchable with its range; a segment's
    parts concatenated equal the segment."""
    problems = []
    base = base_of(url)
    for segment in playlist.segments:
        if not segment.parts:
            continue
        status, _h, whole = get(base + segment.uri)
        if status != 200:
            problems.append(f"{segment.uri}: {status}")
            continue
        joined = b""
        for part in segment.parts:
            last = part.offset + part.length - 1
            status, _headers, body = get(base + part.uri, {"Range": f"bytes={part.offset}-{last}"})
            if status != 206 or len(body) != part.length:
                problems.append(f"part {part.msn}.{part.index}: {status}, {len(body)} bytes")
            joined += body
        if joined != whole:
            problems.append(f"{segment.uri}: parts concatenated != the segment")
    return problems


def check_in_progress_parts(url: str, playlist: LLPlaylist) -> list[str]:
    """The listed parts of the segment being written (only a ``.tmp`` on disk until it is
    renamed): fetchable by range under the segment's final name. Served by
    streaming/growing.py; fails without it."""
    problems = []
    base = base_of(url)
    for part in playlist.current:
        last = part.offset + part.length - 1
        status, _h, body = get(base + part.uri, {"Range": f"bytes={part.offset}-{last}"})
        if status != 206 or len(body) != part.length:
            problems.append(f"in-progress part {part.msn}.{part.index}: {status}, {len(body)} B")
    return problems


def next_part(playlist: LLPlaylist) -> tuple[int, int]:
    """What hls.js asks next in low-latency mode: the part after the last one."""
    last = playlist.last_part
    if last is None:
        return playlist.last_msn + 1, 0
    if last[0] == playlist.last_msn:  # the last part ends a complete segment
        return last[0] + 1, 0
    return last[0], last[1] + 1


def answers(answer: LLPlaylist, msn: int, index: int) -> bool:
    """The playlist holds part ``index`` of ``msn``, or (past the last part of a complete
    segment ``msn``) part 0 of the next one: what a blocking request asks (6.2.5.2)."""
    if answer.has_part(msn, index):
        return True
    complete = any(segment.msn == msn for segment in answer.segments)
    return complete and answer.has_part(msn + 1, 0)


def check_blocking(url: str) -> list[str]:
    """A request for the next part, which the playlist fetched just before does not list,
    is held and answered with a playlist that lists it. On content, not on time: an
    answer sent before that part existed could not list it."""
    playlist = fetch(url)
    msn, index = next_part(playlist)
    if answers(playlist, msn, index):
        return [f"next_part {msn}.{index} is already listed: the check asks nothing new"]
    status, headers, body = get(f"{url}?_HLS_msn={msn}&_HLS_part={index}")
    if status != 200:
        return [f"blocking request {msn}.{index}: {status} {body[:200]!r}"]
    answer = parse(body.decode())
    problems = check_playlist(answer)
    if not answers(answer, msn, index):
        problems.append(f"asked {msn}.{index}, got last part {answer.last_part}: not held")
    if "max-age" not in headers.get("cache-control", ""):
        problems.append(f"blocking response Cache-Control {headers.get('cache-control')}")
    return problems


BAD_QUERIES = [
    "_HLS_part=1",  # part without msn
    "_HLS_msn=abc",
    "_HLS_msn=-1",
    "_HLS_msn=1.5",
    "_HLS_msn=%C2%B2",  # a superscript digit
    "_HLS_msn=" + "9" * 40,  # huge
    "_HLS_msn=",
    "_HLS_msn=1&_HLS_msn=2",
    "_HLS_msn=1&_HLS_part=x",
    "_HLS_skip=MAYBE",
    "_HLS_msn=999999999",  # far beyond the live edge
]


def check_bad_values(url: str, playlist: LLPlaylist | None = None) -> list[str]:
    """Malformed or out-of-range directives: 400 at once, with a plain-text reason."""
    playlist = playlist or fetch(url)
    queries = [
        *BAD_QUERIES,
        f"_HLS_msn={playlist.last_msn + 3}",
        f"_HLS_msn={playlist.last_msn + 1}&_HLS_part=500",  # more parts than a segment has
        f"_HLS_msn={playlist.last_msn + 2}&_HLS_part=30",
    ]
    problems = []
    for query in queries:
        status, _headers, body = get(f"{url}?{query}", timeout=10)
        if status != 400 or not body.strip():
            problems.append(f"?{query}: {status} {body[:100]!r}")
    return problems


def check_reports(url: str) -> list[str]:
    """Each ``EXT-X-RENDITION-REPORT`` names another rendition's playlist, and that
    playlist fetched afterwards is at least as far as reported (edges only advance)."""
    playlist = fetch(url)
    problems = []
    for report in playlist.reports:
        other = fetch(base_of(url) + report["URI"])
        reported = (int(report["LAST-MSN"]), int(report.get("LAST-PART", -1)))
        now = other.last_part or (other.last_msn, -1)
        if now < reported:
            problems.append(f"{report['URI']}: reported {reported}, then at {now}")
    return problems


def _shape(segment: SegmentEntry) -> tuple:
    parts = tuple((p.uri, p.offset, p.length, p.duration, p.independent) for p in segment.parts)
    return segment.msn, segment.uri, round(segment.duration, 4), parts


def check_delta(url: str, attempts: int = 20) -> list[str]:
    """A delta update (``_HLS_skip=YES``) against the full playlist of the same state,
    fetched right after it (again until both show the same edge and reports: the edge
    moves), checked by ``delta_problems``."""
    for _ in range(attempts):
        status, _h, body = get(f"{url}?_HLS_skip=YES")
        if status != 200:
            return [f"delta: {status}"]
        delta = parse(body.decode())
        full = fetch(url)
        if (full.last_msn, full.last_part, full.reports) == (
            delta.last_msn,
            delta.last_part,
            delta.reports,
        ):
            return delta_problems(delta, full)
    return [f"no delta and full playlist of the same state in {attempts} tries"]


def delta_problems(delta: LLPlaylist, full: LLPlaylist) -> list[str]:
    """A delta update against the full playlist of the same state:

    * the segments left in the delta last at least ``CAN-SKIP-UNTIL`` (nothing inside the
      Skip Boundary skipped), and it skips something (else the full playlist is due);
    * its segments (parts included), the parts being written, hint and reports equal the
      full playlist's, numbered from ``MEDIA-SEQUENCE`` + ``SKIPPED-SEGMENTS``, with the
      ``EXT-X-MAP`` in effect."""
    problems = check_playlist(delta)
    if "#EXT-X-SKIP:" not in delta.text or not delta.skipped:
        problems.append("delta without #EXT-X-SKIP skipping segments")
    skip_until = float(delta.server_control.get("CAN-SKIP-UNTIL", "0"))
    left = sum(segment.duration for segment in delta.segments)
    if left < skip_until - 1e-3:
        problems.append(f"delta keeps {left:.3f} s of segments < CAN-SKIP-UNTIL {skip_until}")
    if delta.media_sequence != full.media_sequence:
        problems.append(f"MEDIA-SEQUENCE {delta.media_sequence} vs full {full.media_sequence}")
    kept = len(delta.segments)
    tail = full.segments[len(full.segments) - kept :] if kept else []
    if delta.skipped + kept != len(full.segments):
        problems.append(f"skipped {delta.skipped} + kept {kept} != {len(full.segments)} segments")
    elif [_shape(s) for s in delta.segments] != [_shape(s) for s in tail]:
        problems.append("delta segments differ from the full playlist's tail")
    if (delta.current, delta.hints, delta.reports) != (full.current, full.hints, full.reports):
        problems.append("delta's parts being written, hint or reports differ from the full")
    if "#EXT-X-MAP:" not in delta.text:
        problems.append("delta without the init segment's #EXT-X-MAP")
    return problems
