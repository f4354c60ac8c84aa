"""Anchoring a stream's media timeline to capture time, so latency readouts are true.

FFmpeg stamps its outputs with its *own* clock: the MPD's ``availabilityStartTime`` is
when FFmpeg started (unless ``-availability_start_time_ms`` is given) and the HLS
``#EXT-X-PROGRAM-DATE-TIME`` is FFmpeg's start in whole seconds plus the segment
durations. Neither says when the camera captured the frames, so a player computing
"now - wall-clock time of the playing frame" under-reports the delay by the chunking,
upload and start-up time, by seconds (docs/decisions.md, "Viewer latency: timelines
anchored to capture time").

The publisher sends its capture clock with the first chunk: the wall-clock time (ms
since the epoch, synced to this server with ``/streams/time/``) of media time 0. The
pipeline writes it to ``clock.json`` in the stream's folder and passes it to FFmpeg as
``availabilityStartTime``; the HLS media playlists are rewritten when served, each
segment's ``PROGRAM-DATE-TIME`` = capture clock + the segment's own decode time (its
``tfdt``) — exact to the millisecond, whatever FFmpeg wrote. A publisher that sends no
clock gets the server's time at the first chunk (``source: "server"``: the readout then
misses the chunk and upload delay, and viewers are told so).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from streaming.fmp4 import init_timescale
from streaming.playlists import fix_target_duration, tfdt_of

logger = logging.getLogger(__name__)

CLOCK_FILE = "clock.json"
#: A capture clock further from the server's time than this is not believed.
MAX_CLOCK_PAST_MS = 10 * 60 * 1000  # the first chunk may wait in the publisher's queue
MAX_CLOCK_FUTURE_MS = 10 * 1000  # clock sync error allowance
# A run after a restart or takeover (streaming/runs.py) lives in ``run<k>/`` with its own clock.
SEGMENT_URI_RE = re.compile(r"^(?:(run\d+)/)?chunk-stream(\d+)-(\d+)\.m4s$")
HEADER_BYTES = 16 * 1024  # a segment's moof (with tfdt) is at its start and small


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_ms(ms: int) -> str:
    """``2026-01-02T03:04:05.678Z``: ISO 8601 UTC with milliseconds (HLS, DASH, dash.js)."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class ClockError(ValueError):
    """The publisher's capture clock is not an integer or is far from the server's time."""


#: The form a capture clock may take as text: ASCII digits only, at most 15 of them (ms
#: since the epoch have 13 until the year 2286). ``str.isdigit`` and ``int()`` also take
#: "²" or "١٢٣", spaces and underscores; the first made ``int()`` raise (a 500, a dead
#: socket) and the others are not what any publisher sends.
CAPTURE_MS_TEXT_RE = re.compile(r"[0-9]{1,15}")
#: Outside this an integer is not a time at all: refused before any arithmetic, so a
#: huge JSON integer cannot overflow the float in the message.
CAPTURE_MS_MAX = 10**15


def parse_capture_ms(value: object) -> int:
    """A capture clock as sent (a JSON integer, or ASCII digits in a form field) as an
    ``int``; ``ClockError`` for anything else (bools, floats, NaN, signs, exponents,
    spaces, non-ASCII digits, more than 15 digits)."""
    if isinstance(value, str) and CAPTURE_MS_TEXT_RE.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClockError("capture_ms must be an integer (milliseconds since the epoch)")
    if not 0 <= value < CAPTURE_MS_MAX:
        raise ClockError("capture_ms is out of range: milliseconds since the epoch expected")
    return value


def check_capture_ms(value: object, server_ms: int | None = None) -> int:
    """Validate a publisher's capture clock (epoch ms, as ``parse_capture_ms`` takes it)
    against the server's time; raises ``ClockError`` with why."""
    value = parse_capture_ms(value)
    server_ms = now_ms() if server_ms is None else server_ms
    if not server_ms - MAX_CLOCK_PAST_MS <= value <= server_ms + MAX_CLOCK_FUTURE_MS:
        raise ClockError(
            f"capture_ms={value} is {(server_ms - value) / 1000:+.1f} s from the server's "
            "clock; sync with /streams/time/ first"
        )
    return value


@dataclass(frozen=True)
class StreamClock:
    capture_ms: int  # wall-clock ms (epoch) of media time 0
    source: str  # "publisher" (sent with the first chunk) or "server" (first chunk's arrival)

    def as_dict(self) -> dict[str, object]:
        return {
            "capture_ms": self.capture_ms,
            "capture_time": iso_ms(self.capture_ms),
            "source": self.source,
        }


def _version(path: Path) -> tuple[int, int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def write_clock(output_dir: Path, clock: StreamClock) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / (CLOCK_FILE + ".tmp")
    tmp.write_text(json.dumps(clock.as_dict()))
    os.replace(tmp, output_dir / CLOCK_FILE)


def read_clock(output_dir: Path) -> StreamClock | None:
    """The folder's clock, or None. Cached per version of the file (``write_clock``
    replaces it by rename): playlist and MPD requests read it several times a second."""
    path = output_dir / CLOCK_FILE
    version = _version(path)
    return None if version is None else _read_clock(os.fspath(path), version)


@functools.lru_cache(maxsize=1024)
def _read_clock(path: str, version: tuple) -> StreamClock | None:
    try:
        data = json.loads(Path(path).read_text())
        return StreamClock(int(data["capture_ms"]), str(data.get("source", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- fMP4 header reading (segments are immutable once FFmpeg renamed them: cache) ------
@functools.lru_cache(maxsize=4096)
def _segment_tfdt(path: str, size: int) -> int | None:
    with open(path, "rb") as handle:
        return tfdt_of(handle.read(HEADER_BYTES))


@functools.lru_cache(maxsize=256)
def _init_timescale(path: str, size: int, mtime_ns: int) -> int | None:
    return init_timescale(Path(path).read_bytes())


def timescale_of(init: Path) -> int | None:
    """The track timescale of an initialization segment (cached: it never changes in a
    run); raises ``OSError`` if it cannot be read."""
    stat = init.stat()
    return _init_timescale(str(init), stat.st_size, stat.st_mtime_ns)


def media_time_ms(output_dir: Path, rep: int, number: int) -> float | None:
    """Start of segment ``number`` of representation ``rep`` in media ms (its tfdt)."""
    segment = output_dir / f"chunk-stream{rep}-{number:05d}.m4s"
    init = output_dir / f"init-stream{rep}.m4s"
    try:
        tfdt = _segment_tfdt(str(segment), segment.stat().st_size)
        timescale = timescale_of(init)
    except OSError:
        return None
    if tfdt is None or not timescale:
        return None
    return tfdt * 1000 / timescale


def anchor_hls_playlist(text: str, output_dir: Path, clock: StreamClock | None) -> str:
    """An FFmpeg media playlist with every ``PROGRAM-DATE-TIME`` on the capture clock.

    Each segment gets ``#EXT-X-PROGRAM-DATE-TIME`` = capture clock + its tfdt, right
    before its URI; FFmpeg's own (whole-second, FFmpeg-start based) tags are dropped. A
    segment whose header cannot be read keeps no tag (players interpolate from the
    previous one). Also fixes FFmpeg's ``TARGETDURATION:0`` for sub-second segments.
    """
    text = fix_target_duration(text)
    if clock is None:
        return text
    out: list[str] = []
    clocks: dict[str, StreamClock | None] = {"": clock}
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            continue
        match = SEGMENT_URI_RE.match(line.strip())
        if match:
            run = match[1] or ""
            if run not in clocks:
                clocks[run] = read_clock(output_dir / run)
            folder = output_dir / run if run else output_dir
            start = media_time_ms(folder, int(match[2]), int(match[3]))
            anchor = clocks[run]
            if start is not None and anchor is not None:
                out.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso_ms(anchor.capture_ms + round(start))}")
        out.append(line)
    return "\n".join(out) + "\n"


ANCHORED_KEPT = 256  # playlist versions kept (a few per live rendition)
_anchored: dict[tuple, str] = {}


def read_anchored_playlist(path: Path) -> str:
    """The media playlist at ``path`` anchored (``anchor_hls_playlist``), cached while the
    playlist and its folder's ``clock.json`` are unchanged: players ask for the same
    version many times, and anchoring reads each listed segment's header. FFmpeg and
    streaming/runs.py replace playlists by rename, so a new version is a new inode; a
    listed segment is complete and never changes. A text in which some segment could not
    be anchored (a header or clock not readable yet) is not kept: the next read tries
    again. Raises ``OSError`` if it cannot be read.
    """
    version = _version(path)
    if version is None:
        raise FileNotFoundError(path)
    key = (os.fspath(path), version, _version(path.parent / CLOCK_FILE))
    found = _anchored.get(key)
    if found is None:
        text = path.read_text(errors="replace")
        found = anchor_hls_playlist(text, path.parent, read_clock(path.parent))
        segments = sum(1 for line in found.splitlines() if SEGMENT_URI_RE.match(line.strip()))
        if found.count("#EXT-X-PROGRAM-DATE-TIME:") == segments:
            if len(_anchored) >= ANCHORED_KEPT:
                _anchored.pop(next(iter(_anchored)))  # the oldest
            _anchored[key] = found
    return found
