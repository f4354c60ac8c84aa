"""HTTP viewers of a live stream, as hls.js loads it, and a watch on the encoder's files:
the plumbing of the low-latency benchmarks (``ll_origin``, ``stream_latency``'s LL rows).

* ``HttpConnection``: one keep-alive HTTP/1.1 connection (asyncio streams; Content-Length,
  chunked, or read-to-close bodies). The venv has no HTTP client library, and a browser's
  per-connection behaviour (one request at a time) is what is being imitated anyway.
* ``parse_media_playlist`` / ``parse_master``: what a player reads of an (LL-)HLS playlist:
  segments, parts (``EXT-X-PART``, byte ranges into the segment's URI), the preload hint,
  ``EXT-X-SKIP`` of a delta update, the server control attributes; and which blocking
  reload comes next (``MediaPlaylist.next_part``).
* ``ll_rendition`` / ``standard_rendition``: one rendition of one viewer. Low latency:
  blocking playlist reloads (``_HLS_msn``/``_HLS_part``, ``_HLS_skip=YES`` when offered,
  as hls.js sends them) and each new part fetched as its byte range. Standard: a reload
  every average segment duration (half that when nothing changed, hls.js's rule) and
  each new segment fetched whole.
* ``FileWatch``: when each fragment of a growing ``<segment>.m4s.tmp`` becomes complete
  on disk, and when each segment is renamed complete: inotify (``streaming.follow``), so
  the times are the file system's, not a poll period's; ``watching`` runs one in a thread.

Every time here is wall-clock ms (``time.time()``): the capture clock, Chromium's
``Date.now()`` and these share the machine's clock.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ATTR_RE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
SEGMENT_NAME_RE = re.compile(r"^(?:run\d+/)?chunk-stream(\d+)-(\d+)\.m4s$")
TMP_RE = re.compile(r"^chunk-stream(\d+)-(\d+)\.m4s\.tmp$")


def now_ms() -> float:
    return time.time() * 1000


# --- HTTP/1.1 ----------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names (a repeated header: the last one)
    body: bytes
    done_ms: float  # wall clock when the last byte arrived


class HttpConnection:
    """One keep-alive HTTP/1.1 connection, one request at a time, reopened when the
    server closed it (or a timeout left it mid-response)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.opened = 0  # connections opened (1 = kept alive throughout)

    async def request(
        self, path: str, headers: dict[str, str] | None = None, limit_s: float = 10.0
    ) -> Response:
        """GET ``path``; raises ``TimeoutError`` (connection dropped) or ``OSError``."""
        try:
            async with asyncio.timeout(limit_s):
                return await self._exchange(path, headers or {})
        except BaseException:
            self.close()  # a half-read response must not be read as the next one's
            raise

    async def _exchange(self, path: str, headers: dict[str, str]) -> Response:
        for attempt in (0, 1):
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                self.opened += 1
            assert self._reader is not None and self._writer is not None
            lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            try:
                await self._writer.drain()
                status_line = await self._reader.readline()
            except ConnectionError:
                status_line = b""
            if status_line:
                break
            self.close()  # closed while idle (keep-alive timeout): once more on a new one
            if attempt:
                raise ConnectionResetError("the server closed the connection")
        response, keep = await read_response(self._reader, status_line)
        if not keep:
            self.close()
        return response

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def read_response(reader: asyncio.StreamReader, status_line: bytes) -> tuple[Response, bool]:
    """The response after its status line; and whether the connection may be reused."""
    parts = status_line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ConnectionError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
    if status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        pieces = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while await reader.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            pieces.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(pieces)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body, keep = await reader.read(), False
    return Response(status, headers, body, now_ms()), keep


# --- playlists ---------------------------------------------------------------------------------


def attributes(text: str) -> dict[str, str]:
    """``KEY=value,KEY="quoted, value"`` → dict (quotes removed)."""
    return {k: v[1:-1] if v.startswith('"') else v for k, v in ATTR_RE.findall(text)}


@dataclass(frozen=True)
class Part:
    uri: str
    offset: int | None  # None: the whole URI (a part file, not a byte range)
    length: int | None
    duration: float
    independent: bool


@dataclass
class Segment:
    msn: int
    uri: str
    duration: float
    parts: list[Part] = field(default_factory=list)


@dataclass
class MediaPlaylist:
    target_duration: float = 0.0
    part_target: float | None = None
    media_sequence: int = 0
    skipped: int = 0  # EXT-X-SKIP:SKIPPED-SEGMENTS (delta update)
    segments: list[Segment] = field(default_factory=list)
    pending_parts: list[Part] = field(default_factory=list)  # of the segment being written
    preload_hint: tuple[str, int | None] | None = None  # (URI, BYTERANGE-START)
    can_block_reload: bool = False
    can_skip_until: float | None = None
    part_hold_back: float | None = None
    ended: bool = False

    @property
    def next_msn(self) -> int:
        """Media sequence number of the segment after the last complete one."""
        return self.media_sequence + self.skipped + len(self.segments)

    def next_part(self) -> tuple[int, int]:
        """``(_HLS_msn, _HLS_part)`` of the first part not in this playlist yet: the next
        part of the segment being written (its parts so far are ``pending_parts``)."""
        return self.next_msn, len(self.pending_parts)

    def all_parts(self) -> list[Part]:
        return [p for s in self.segments for p in s.parts] + self.pending_parts

    def average_segment_s(self) -> float:
        durations = [s.duration for s in self.segments]
        return sum(durations) / len(durations) if durations else self.target_duration


def parse_media_playlist(text: str) -> MediaPlaylist:
    """The parts of a media playlist a player acts on; byte ranges without an offset
    continue from the previous range of the same URI (RFC 8216bis 4.4.4.9)."""
    out = MediaPlaylist()
    parts: list[Part] = []
    duration: float | None = None
    range_end: dict[str, int] = {}
    for raw in text.splitlines():
        line = raw.strip()
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-TARGETDURATION":
            out.target_duration = float(value)
        elif tag == "#EXT-X-PART-INF":
            out.part_target = float(attributes(value)["PART-TARGET"])
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            out.media_sequence = int(value)
        elif tag == "#EXT-X-SKIP":
            out.skipped = int(attributes(value)["SKIPPED-SEGMENTS"])
        elif tag == "#EXT-X-SERVER-CONTROL":
            control = attributes(value)
            out.can_block_reload = control.get("CAN-BLOCK-RELOAD") == "YES"
            if "CAN-SKIP-UNTIL" in control:
                out.can_skip_until = float(control["CAN-SKIP-UNTIL"])
            if "PART-HOLD-BACK" in control:
                out.part_hold_back = float(control["PART-HOLD-BACK"])
        elif tag == "#EXT-X-PART":
            attrs = attributes(value)
            uri = attrs["URI"]
            offset = length = None
            if "BYTERANGE" in attrs:
                size, _, start = attrs["BYTERANGE"].partition("@")
                length = int(size)
                offset = int(start) if start else range_end.get(uri, 0)
                range_end[uri] = offset + length
            independent = attrs.get("INDEPENDENT") == "YES"
            parts.append(Part(uri, offset, length, float(attrs["DURATION"]), independent))
        elif tag == "#EXT-X-PRELOAD-HINT":
            attrs = attributes(value)
            start = attrs.get("BYTERANGE-START")
            out.preload_hint = (attrs["URI"], int(start) if start is not None else None)
        elif tag == "#EXTINF":
            duration = float(value.split(",")[0])
        elif tag == "#EXT-X-ENDLIST":
            out.ended = True
        elif line and not line.startswith("#"):
            msn = out.media_sequence + out.skipped + len(out.segments)
            out.segments.append(Segment(msn, line, duration or 0.0, parts))
            parts, duration = [], None
    out.pending_parts = parts
    return out


def parse_master(text: str) -> tuple[list[str], list[str]]:
    """(variant playlist URIs, highest ``BANDWIDTH`` first; audio rendition URIs) of a
    master playlist."""
    variants: list[tuple[int, int, str]] = []
    audio: list[str] = []
    bandwidth: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-STREAM-INF:"):
            bandwidth = int(attributes(line.partition(":")[2]).get("BANDWIDTH", 0) or 0)
        elif line.startswith("#EXT-X-MEDIA:"):
            attrs = attributes(line.partition(":")[2])
            if attrs.get("TYPE") == "AUDIO" and attrs.get("URI"):
                audio.append(attrs["URI"])
        elif bandwidth is not None and line and not line.startswith("#"):
            variants.append((-bandwidth, len(variants), line))
            bandwidth = None
    return [uri for *_, uri in sorted(variants)], list(dict.fromkeys(audio))


def unit_key(uri: str, offset: int | None) -> tuple[str, int | None]:
    """What a part or segment is called in ``FileWatch`` and the viewers' records: the
    segment's file name (any ``run<k>/`` dropped) and the part's byte offset (None: the
    whole segment)."""
    return uri.rsplit("/", 1)[-1], offset


def blocking_query(playlist: MediaPlaylist, skip: bool = True) -> str:
    """The query hls.js adds to a blocking reload of ``playlist``'s rendition."""
    msn, part = playlist.next_part()
    query = f"_HLS_msn={msn}&_HLS_part={part}"
    if skip and playlist.can_skip_until is not None:
        query += "&_HLS_skip=YES"
    return query


def standard_reload_s(playlist: MediaPlaylist, changed: bool) -> float:
    """hls.js's live reload interval for a playlist without blocking reload: the average
    segment duration, halved when the reload brought nothing new."""
    interval = playlist.average_segment_s() or 1.0
    return interval if changed else interval / 2


# --- viewers -----------------------------------------------------------------------------------


@dataclass
class ViewerStats:
    """What all the viewers of one mode did; shared by their rendition loops."""

    requests: Counter = field(default_factory=Counter)  # kind → count
    statuses: Counter = field(default_factory=Counter)  # "kind status" → count
    timeouts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # "kind ExceptionName" → count
    bytes: int = 0
    #: unit_key → when the first viewer saw it listed / got its bytes (ms)
    listed: dict[tuple[str, int | None], float] = field(default_factory=dict)
    served: dict[tuple[str, int | None], float] = field(default_factory=dict)
    #: per (viewer, unit): listed ms and served ms, for lags against FileWatch
    seen: list[tuple[tuple[str, int | None], float, float | None]] = field(default_factory=list)
    record_seen: bool = True

    def note(self, kind: str, response: Response) -> None:
        self.requests[kind] += 1
        self.statuses[f"{kind} {response.status}"] += 1
        self.bytes += len(response.body)

    def reset(self) -> None:
        """Start counting afresh (the sampling window begins; the viewers run on)."""
        for name in ("requests", "statuses", "timeouts", "errors"):
            setattr(self, name, Counter())
        self.bytes = 0
        self.listed, self.served, self.seen = {}, {}, []

    def counts(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "statuses": dict(sorted(self.statuses.items())),
            "timeouts": dict(self.timeouts),
            "errors": dict(self.errors),
            "bytes": self.bytes,
        }

    def unit(self, key: tuple[str, int | None], listed: float, served: float | None) -> None:
        self.listed.setdefault(key, listed)
        if served is not None:
            self.served.setdefault(key, served)
        if self.record_seen:
            self.seen.append((key, listed, served))


async def _get(
    conn: HttpConnection,
    stats: ViewerStats,
    kind: str,
    path: str,
    headers: dict[str, str] | None = None,
    limit_s: float = 10.0,
) -> Response | None:
    try:
        response = await conn.request(path, headers, limit_s)
    except TimeoutError:
        stats.timeouts[kind] += 1
        return None
    except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
        stats.errors[f"{kind} {type(exc).__name__}"] += 1
        await asyncio.sleep(0.2)  # a refused or reset connection: do not spin on it
        return None
    stats.note(kind, response)
    return response


def _url_join(playlist_path: str, uri: str) -> str:
    return uri if uri.startswith("/") else playlist_path.rsplit("/", 1)[0] + "/" + uri


async def ll_rendition(
    conn: HttpConnection,
    playlist_path: str,
    stats: ViewerStats,
    fetch_parts: bool = True,
    skip: bool = True,
) -> None:
    """One rendition of a low-latency viewer, until cancelled: blocking reloads for the
    next part, each new part fetched as its byte range (in order, as hls.js does), from
    the live edge on (the parts listed at the start are not fetched)."""
    first = await _get(conn, stats, "playlist", playlist_path)
    while first is None or first.status != 200:
        await asyncio.sleep(0.5)
        first = await _get(conn, stats, "playlist", playlist_path)
    playlist = parse_media_playlist(first.body.decode())
    if not playlist.can_block_reload:
        raise RuntimeError(
            f"{playlist_path} is not a low-latency playlist (no CAN-BLOCK-RELOAD=YES)"
        )
    known = {unit_key(p.uri, p.offset) for p in playlist.all_parts()}
    hold = 3 * (playlist.target_duration or 1.0) + 2  # the server answers within 3 targets
    while True:
        path = f"{playlist_path}?{blocking_query(playlist, skip)}"
        response = await _get(conn, stats, "held playlist", path, limit_s=hold)
        if response is None or response.status != 200:
            # 503 (nothing within 3 targets), 400 (out of range after a gap): start over
            # from a plain reload, as a player does
            await asyncio.sleep(playlist.part_target or 0.2)
            response = await _get(conn, stats, "playlist", playlist_path)
            if response is None or response.status != 200:
                continue
        listed_at = response.done_ms
        playlist = parse_media_playlist(response.body.decode())
        for part in playlist.all_parts():
            key = unit_key(part.uri, part.offset)
            if key in known:
                continue
            known.add(key)
            served = None
            if fetch_parts:
                headers = {}
                if part.offset is not None and part.length is not None:
                    headers["Range"] = f"bytes={part.offset}-{part.offset + part.length - 1}"
                got = await _get(conn, stats, "part", _url_join(playlist_path, part.uri), headers)
                if got is not None and got.status in (200, 206):
                    served = got.done_ms
            stats.unit(key, listed_at, served)
        if len(known) > 4000:  # keep the memory bounded on long runs
            known = {unit_key(p.uri, p.offset) for p in playlist.all_parts()}


async def standard_rendition(conn: HttpConnection, playlist_path: str, stats: ViewerStats) -> None:
    """One rendition of a standard-mode viewer, until cancelled: a plain reload every
    ``standard_reload_s``, each new segment fetched whole, from the live edge on."""
    known: set[str] | None = None
    playlist = MediaPlaylist(target_duration=1.0)
    changed = True
    while True:
        response = await _get(conn, stats, "playlist", playlist_path)
        if response is not None and response.status == 200:
            playlist = parse_media_playlist(response.body.decode())
            uris = [s.uri for s in playlist.segments]
            if known is None:
                known = set(uris)
            fresh = [u for u in uris if u not in known]
            changed = bool(fresh)
            for uri in fresh:
                known.add(uri)
                got = await _get(conn, stats, "segment", _url_join(playlist_path, uri))
                served = got.done_ms if got is not None and got.status == 200 else None
                stats.unit(unit_key(uri, None), response.done_ms, served)
            if len(known) > 4000:
                known = set(uris)
        await asyncio.sleep(standard_reload_s(playlist, changed))


# --- the encoder's files -----------------------------------------------------------------------


@dataclass
class Unit:
    """A fragment (a part) or a whole segment as it became complete on disk."""

    written_ms: float
    rep: int
    decode_time: int | None  # tfdt, track timescale
    duration: int  # track timescale (a segment: the sum of its fragments seen)
    length: int


class FileWatch:
    """Times at which each fragment of ``reps``' segments became complete on disk (read
    from the growing ``.m4s.tmp``), and each segment was renamed complete. Keys as
    ``unit_key``: (segment file name, fragment offset) / (segment file name, None).

    Runs as a task on the caller's event loop: ``streaming.follow`` wakes it on every
    change in the folder (no polling); each wake re-reads the growing files past what was
    already seen complete.
    """

    def __init__(self, folder: Path, reps: tuple[int, ...] = (0,)) -> None:
        self.folder = folder
        self.reps = reps
        self.units: dict[tuple[str, int | None], Unit] = {}
        self.timescales: dict[int, int] = {}
        self._complete: dict[str, int] = {}  # tmp name → bytes already parsed as complete
        self._stop = asyncio.Event()
        self._grew = asyncio.Event()  # set (and replaced) by each scan that found units
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop it runs on

    async def until(self, key: tuple[str, int | None], within: float) -> bool:
        """Whether ``key`` is (or, within ``within`` s of running, becomes) known."""
        async with asyncio.timeout(within):
            while key not in self.units:
                await self._grew.wait()
        return True

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        from streaming import follow

        self.loop = asyncio.get_running_loop()
        while not self.folder.is_dir():  # created by the pipeline when the stream starts
            try:
                await asyncio.wait_for(self._stop.wait(), 0.05)
                return
            except TimeoutError:
                continue

        async def check() -> bool | None:
            before = len(self.units)
            self.scan()
            if len(self.units) != before:
                self._grew, grew = asyncio.Event(), self._grew
                grew.set()
            return True if self._stop.is_set() else None

        while not self._stop.is_set():
            await follow.wait_for(self.folder, check, within=0.5)

    def _timescale(self, rep: int) -> int | None:
        if rep not in self.timescales:
            from streaming.fmp4 import init_timescale

            try:
                scale = init_timescale((self.folder / f"init-stream{rep}.m4s").read_bytes())
            except OSError:
                return None
            if scale:
                self.timescales[rep] = scale
        return self.timescales.get(rep)

    def scan(self) -> None:
        from streaming.fmp4 import fragments

        now = now_ms()
        try:
            names = [entry.name for entry in os.scandir(self.folder)]
        except OSError:
            return
        for name in sorted(names, key=lambda n: n.endswith(".tmp")):  # renamed ones first
            match = TMP_RE.match(name) or SEGMENT_NAME_RE.match(name)
            if match is None or int(match.group(1)) not in self.reps:
                continue
            rep = int(match.group(1))
            segment = name.removesuffix(".tmp")
            final = segment == name
            if final and (segment, None) in self.units:
                continue
            # Complete data ends at a fragment boundary: parse on from there.
            start = self._complete.get(segment, 0)
            try:
                with open(self.folder / name, "rb") as handle:
                    handle.seek(start)
                    data = handle.read()
            except OSError:
                continue  # renamed between the listing and the open: the next wake sees it
            found, complete = fragments(data)
            for fragment in found:
                key = (segment, start + fragment.offset)
                unit = Unit(now, rep, fragment.decode_time, fragment.duration, fragment.length)
                self.units.setdefault(key, unit)
            self._complete[segment] = start + complete
            if final:
                parts = sorted(
                    (k[1], u) for k, u in self.units.items() if k[0] == segment and k[1] is not None
                )
                first = parts[0][1].decode_time if parts else None
                total = sum(u.duration for _, u in parts)
                self.units[(segment, None)] = Unit(now, rep, first, total, start + len(data))
                self._complete.pop(segment, None)

    def capture_end_ms(self, key: tuple[str, int | None], capture_ms: float) -> float | None:
        """Wall-clock capture time of the end of a unit's media: the stream's capture
        clock (media time 0) + its decode time + duration, in the track's timescale."""
        unit = self.units.get(key)
        if unit is None or unit.decode_time is None:
            return None
        scale = self._timescale(unit.rep)
        if not scale:
            return None
        return capture_ms + (unit.decode_time + unit.duration) * 1000 / scale


@contextmanager
def watching(folder: Path, reps: tuple[int, ...] = (0,)) -> Iterator[FileWatch]:
    """A ``FileWatch`` running on an event loop of its own in a thread, so that the times
    it notes do not wait behind the viewers' work on the caller's loop (a thread waits at
    most the interpreter's switch interval, 5 ms, for the GIL)."""
    watch = FileWatch(folder, reps)
    started = threading.Event()

    async def main() -> None:
        watch.loop = asyncio.get_running_loop()
        started.set()
        await watch.run()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield watch
    finally:
        if watch.loop is not None and thread.is_alive():
            watch.loop.call_soon_threadsafe(watch.stop)
        thread.join(10)


def lags_ms(
    times: dict[tuple[str, int | None], float] | list[tuple[tuple[str, int | None], float]],
    reference: Callable[[tuple[str, int | None]], float | None],
) -> list[float]:
    """``time - reference(key)`` for every key with a reference (others skipped)."""
    pairs = times.items() if isinstance(times, dict) else times
    out = []
    for key, at in pairs:
        ref = reference(key)
        if ref is not None and at is not None:
            out.append(at - ref)
    return out


def summary(values: list[float]) -> dict[str, Any]:
    """n, p50, p95 and max of ms values (rounded); ``{"n": 0}`` for none."""
    from bench.support import percentile

    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50), 1),
        "p95_ms": round(percentile(values, 95), 1),
        "max_ms": round(max(values), 1),
    }
