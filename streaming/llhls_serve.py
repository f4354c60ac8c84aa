"""Serving LL-HLS media playlists: reading the live edge, blocking playlist reload.

``serve_playlist`` answers ``GET media_<n>.m3u8`` of a low-latency stream folder
(streaming/media.py hands them over). The playlist is rendered by streaming/llhls.py from
the served playlist text (FFmpeg's or the stitched one, PDT anchored as for every stream)
and the fragments of the last segments on disk.

Blocking reload (``_HLS_msn`` [``_HLS_part``]): the request is held until the playlist
contains that segment or part (streaming/follow.py: inotify on the stream folder and the
live run's ``run<k>/``, no thread and no polling per request), then answered with the whole
playlist. Both folders: after a restart the encoder writes its parts into ``run<k>/`` while
the stitched playlists, the final one (``EXT-X-ENDLIST``) included, are written into the
stream folder; an ended stream answers its waiters at once with that playlist. Bounds:
``streaming.holds`` (429 past the per-client limit, 503 past the process's), 3 target
durations at most (the spec's SHOULD: then 503 with ``Retry-After``), and values the edge
will not reach soon are refused at once (400, llhls.check_directives).

Sharing: every change in the folder wakes its waiters, which all need the same fresh
state. One read of the stream's edge (every rendition: the rendition reports need the
others' edges) runs at a time per folder in a worker thread; callers that arrive while one
runs share the next read, which starts when it ends (so each caller's answer was read after
it asked), and the rendered text is kept with that read for every waiter of the state (a
read that finds the same state as the last keeps the last, texts and all). Measured with
the real FFmpeg writing three renditions: ~36 folder changes a second, one read ~0.7 ms.

Cache-Control: a blocking response names its state in the URL (that part or later), so it
is cacheable for a few target durations; a plain LL playlist changes every part: no-cache.

Limits: one event loop per process (Daphne's); a held request watches the run that was
live when it came: after a restart into a new ``run<k>/`` while held, it wakes on the
stitched playlists only (the next segment listed, or the bound: 503, the player asks
again and gets the new run).
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from django.http import HttpRequest, HttpResponse

from rtcsite.http import MEDIA_CORS_HEADERS, client_address
from streaming import follow, llhls
from streaming.clock import read_anchored_playlist, read_clock, timescale_of
from streaming.fmp4 import fragments
from streaming.holds import held_requests
from streaming.lowlatency import LowLatency

CONTENT_TYPE = "application/vnd.apple.mpegurl"
MASTER = "master.m3u8"
RENDITION_RE = re.compile(r"media_(\d+)\.m3u8")
WAIT_TARGETS = 3  # longest hold, in target durations (the spec: 503 after that)
CACHE_TARGETS = 3  # max-age of a blocking response, in target durations
MAX_UNLISTED = 3  # renamed segments not yet listed that we list ourselves
HEADERS = {**MEDIA_CORS_HEADERS, "X-Content-Type-Options": "nosniff"}


# --- reading the edge (worker thread) -----------------------------------------------------
@functools.lru_cache(maxsize=1024)
def _complete_fragments(path: str, size: int, mtime: int) -> tuple[tuple, int]:
    """A renamed segment's fragments (its bytes are final: cached by size and mtime)."""
    with open(path, "rb") as handle:
        found, end = fragments(handle.read())
    return tuple(found), end


def _read_tail(folder: Path, uri: str, clock_ms: int | None, timescale: int):
    """The tail for ``uri``: the complete file, else its ``.tmp``, else the complete file
    again (renamed between the two looks); None if neither exists."""
    path = folder / uri
    looks = ((path, True), (path.with_name(path.name + ".tmp"), False), (path, True))
    for candidate, complete in looks:
        try:
            if complete:
                stat = os.stat(candidate)
                found, end = _complete_fragments(str(candidate), stat.st_size, stat.st_mtime_ns)
                size = stat.st_size
            else:
                with open(candidate, "rb") as handle:
                    data = handle.read()
                listed, end = fragments(data)
                found, size = tuple(listed), len(data)
        except OSError:
            continue
        start = None
        if clock_ms is not None and found and found[0].decode_time is not None and timescale:
            start = clock_ms + round(found[0].decode_time * 1000 / timescale)
        return llhls.Tail(uri, found, complete, end, size, start)
    return None


def _renditions(folder: Path) -> list[int]:
    try:
        text = (folder / MASTER).read_text(errors="replace")
    except OSError:
        text = ""
    found = sorted({int(match) for match in RENDITION_RE.findall(text)})
    if found:
        return found
    return sorted(int(m[1]) for e in os.scandir(folder) if (m := RENDITION_RE.fullmatch(e.name)))


@dataclass
class Snapshot:
    """One read of a stream's edge: each rendition's view (or its ended text)."""

    mode: LowLatency
    views: dict[int, llhls.LiveView] = field(default_factory=dict)
    ended: dict[int, str] = field(default_factory=dict)
    _texts: dict[tuple[int, str | None], bytes] = field(default_factory=dict)

    def same_state(self, other: Snapshot) -> bool:
        return (self.mode, self.views, self.ended) == (other.mode, other.views, other.ended)

    def text(self, rep: int, skip: str | None) -> bytes | None:
        """The rendered playlist (kept: every waiter of this state shares it)."""
        if rep in self.ended:
            return self.ended[rep].encode()
        view = self.views.get(rep)
        if view is None:
            return None
        key = (rep, skip)
        if key not in self._texts:
            reports = [
                other.report(f"media_{number}.m3u8")
                for number, other in sorted(self.views.items())
                if number != rep
            ]
            self._texts[key] = llhls.render(view, reports, skip).encode()
        return self._texts[key]


def _read_rendition(folder: Path, rep: int, mode: LowLatency, snapshot: Snapshot) -> None:
    try:
        text = read_anchored_playlist(folder / f"media_{rep}.m3u8")  # cached per version
    except OSError:
        return
    playlist = llhls.parse_playlist(text)
    if playlist.ended:
        snapshot.ended[rep] = text
        return
    prefix = playlist.run_prefix
    run = folder / prefix if prefix else folder
    clock = read_clock(run)
    clock_ms = clock.capture_ms if clock is not None else None
    try:
        timescale = timescale_of(run / f"init-stream{rep}.m4s") or 0
    except OSError:
        timescale = 0
    tails = []
    for segment in playlist.segments[-llhls.PART_SEGMENTS :]:
        name = llhls.segment_name(segment.uri)
        segment_run = folder / name[0] if name and name[0] else folder
        segment_clock = clock_ms if segment_run == run else None
        tail = _read_tail(folder, segment.uri, segment_clock, timescale)
        if tail is not None and tail.complete:
            tails.append(tail)
    last = llhls.segment_name(playlist.segments[-1].uri) if playlist.segments else None
    number = last[2] if last and last[0] == prefix else 0
    for offset in range(1, MAX_UNLISTED + 2):
        uri = llhls.segment_uri(prefix, rep, number + offset)
        tail = _read_tail(folder, uri, clock_ms, timescale)
        if tail is None:
            break
        tails.append(tail)
        if not tail.complete:
            break
    snapshot.views[rep] = llhls.live_view(playlist, tails, timescale, mode, rep)


def read_snapshot(folder: Path, mode: LowLatency) -> Snapshot:
    snapshot = Snapshot(mode)
    for rep in _renditions(folder):
        _read_rendition(folder, rep, mode, snapshot)
    return snapshot


# --- shared reads per folder (event loop) -------------------------------------------------
class _Stream:
    def __init__(self, folder: Path, mode: LowLatency) -> None:
        self.folder = folder
        self.mode = mode
        self._running: asyncio.Future | None = None
        self._next: asyncio.Future | None = None
        self._last: Snapshot | None = None  # kept while the state is the same (its texts)

    @property
    def idle(self) -> bool:
        return self._running is None and self._next is None

    async def fresh(self) -> Snapshot:
        """A snapshot read after this call began; callers meanwhile share the next read."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieve)
        waiting = self._next
        if self._running is None:
            self._start()
        return await asyncio.shield(waiting)

    def _start(self) -> None:
        future, self._next = self._next, None
        self._running = future
        task = asyncio.ensure_future(asyncio.to_thread(read_snapshot, self.folder, self.mode))

        def done(task: asyncio.Task) -> None:
            self._running = None
            if not future.done():
                if task.cancelled():
                    future.cancel()
                elif task.exception() is not None:
                    future.set_exception(task.exception())
                else:
                    found = task.result()
                    if self._last is not None and found.same_state(self._last):
                        found = self._last  # nothing new: its rendered texts still hold
                    self._last = found
                    future.set_result(found)
            if self._next is not None:
                self._start()

        task.add_done_callback(done)


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # seen: no "never retrieved" warning when every waiter left


_streams: dict[tuple[asyncio.AbstractEventLoop, str], _Stream] = {}


def _stream(folder: Path, mode: LowLatency) -> _Stream:
    key = (asyncio.get_running_loop(), os.fspath(folder))
    found = _streams.get(key)
    if found is None or found.mode != mode:
        if len(_streams) > 1024:
            for old in [k for k, s in _streams.items() if s.idle]:
                del _streams[old]
        found = _streams[key] = _Stream(folder, mode)
    return found


# --- the view -----------------------------------------------------------------------------
def _response(
    request: HttpRequest, status: int, body: bytes, cache: str, **extra: str
) -> HttpResponse:
    content_type = CONTENT_TYPE if status == 200 else "text/plain"
    response = HttpResponse(
        b"" if request.method == "HEAD" else body, status=status, content_type=content_type
    )
    for key, value in {**HEADERS, "Cache-Control": cache, **extra}.items():
        response[key] = value
    response["Content-Length"] = str(len(body))
    return response


def _error(request: HttpRequest, status: int, message: str, **extra: str) -> HttpResponse:
    return _response(request, status, message.encode() + b"\n", "no-store", **extra)


async def serve_playlist(
    request: HttpRequest, real: Path, name: str, mode: LowLatency
) -> HttpResponse:
    """``media_<n>.m3u8`` of a low-latency folder (``mode``: its ``read_mode``), with
    blocking reload."""
    try:
        directives = llhls.parse_directives(dict(request.GET.lists()))
    except llhls.BadDirective as exc:
        return _error(request, 400, str(exc))
    folder = real.parent
    rep = int(RENDITION_RE.fullmatch(name)[1])
    stream = _stream(folder, mode)
    snapshot = await stream.fresh()
    if rep in snapshot.ended:
        return _response(request, 200, snapshot.ended[rep].encode(), "no-cache")
    view = snapshot.views.get(rep)
    if view is None:
        return _error(request, 404, "No such media file.")
    try:
        llhls.check_directives(view, directives)
    except llhls.BadDirective as exc:
        return _error(request, 400, str(exc))
    target = view.playlist.target_duration
    if not directives.blocking:
        return _response(request, 200, snapshot.text(rep, directives.skip), "no-cache")
    cache = f"public, max-age={CACHE_TARGETS * target}"
    if llhls.satisfied(view, directives):
        return _response(request, 200, snapshot.text(rep, directives.skip), cache)
    watched = [folder, folder / view.playlist.run_prefix]  # the same one for run 0

    async def check() -> Snapshot | None:
        found = await stream.fresh()
        if rep in found.ended:
            return found
        current = found.views.get(rep)
        if current is not None and llhls.satisfied(current, directives):
            return found
        return None

    with held_requests().hold(client_address(request)) as refused:
        if refused == "client":
            return _error(
                request,
                429,
                "Too many held playlist requests from this client.",
                **{"Retry-After": str(math.ceil(target))},
            )
        if refused == "process":
            return _error(request, 503, "Too many held playlist requests.", **{"Retry-After": "1"})
        try:
            found = await follow.wait_for(watched, check, WAIT_TARGETS * target)
        except (FileNotFoundError, follow.FollowUnavailable) as exc:
            return _error(
                request,
                503,
                f"Cannot wait for this stream: {exc}",
                **{"Retry-After": str(math.ceil(target))},
            )
    if found is None:
        return _error(
            request,
            503,
            f"The stream did not reach segment {directives.msn}"
            + (f" part {directives.part}" if directives.part is not None else "")
            + f" within {WAIT_TARGETS * target} s.",
            **{"Retry-After": str(math.ceil(target))},
        )
    if rep in found.ended:
        return _response(request, 200, found.ended[rep].encode(), "no-cache")
    return _response(request, 200, found.text(rep, directives.skip), cache)
