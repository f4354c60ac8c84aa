"""Serving a low-latency stream's segment while the encoder is still writing it.

In a low-latency folder (``streaming.lowlatency.read_mode``) FFmpeg writes each segment as
``chunk-stream<rep>-<n>.m4s.tmp``, one fragment (moof+mdat: an LL-HLS part, an LL-DASH
chunk) at a time, and renames it to ``chunk-stream<rep>-<n>.m4s`` when it closes, the next
segment's ``.tmp`` created right away. Players ask for the segment by its final name
before that (streaming/llhls.py lists parts as byte ranges of it, the LL-DASH MPD of
streaming/lldash.py announces it), so a request for a final name that does not exist yet
is answered here, by the request's form:

* ``Range: bytes=a-b``: an LL-HLS part. Held until byte ``b`` is on disk, then 206 with
  ``Content-Range: bytes a-b/*`` (the length is not known yet), cacheable for good;
* ``Range: bytes=N-``: the preload-hinted part. Held until the fragment that starts at ``N``
  (or holds it) is complete, then exactly up to that fragment's end (streaming.fmp4),
  ``no-cache``: once the segment is complete the same request means "N to its end". Not
  streamed as it arrives: a 206 must name its last byte (RFC 9110 section 14.4), and FFmpeg
  writes each fragment in one write anyway;
* no ``Range``: dash.js's low-latency loader. 200 at once, chunked (no ``Content-Length``),
  the body following the file as it grows, whole fragments only (the bytes of one not
  complete are held back: a player appending half a moof+mdat to its buffer breaks the
  next append), and ending when it is renamed (its last bytes read then). Each fragment
  reaches the client as soon as inotify reports its write;
* ``HEAD``: held until the segment is complete, then the usual answer (with its length):
  what a HEAD asks (is it there, how long) is known only then, and a page waiting for a
  finished segment (static/js/viewer-page.js) asks it so.

Once the segment is complete (or if it already was) the request is the usual one:
``serve`` returns ``None`` and streaming/media.py serves the file as for any stream.

Only the segment being written or the next one may be waited for (the next one: its
``.tmp`` appears when the current one closes); anything else that does not exist is 404 at
once, so requests for far-future or long-gone segments cost nothing. Waits use
streaming.follow (inotify on the folder, no thread, no polling), each ends within 3 x the
segment target (503 + ``Retry-After``), and each counts in streaming.holds (429 for a client
holding too many, 503 for a full process). A followed body counts until it ends. Where
inotify cannot watch (``follow.FollowUnavailable``: its limits, not Linux) a wait is 503 +
``Retry-After`` before any body. A body whose file stops growing (the encoder died
mid-segment) ends after the same bound at its last whole fragment, as does one whose
folder can no longer be watched: a player gets a short segment that parses, and the next
one is 404/503. The body ends with the usual last chunk: Daphne (4.2) neither lets an ASGI
application abort a response nor closes the connection when one raises after the
response started (it leaves the client waiting), so a cut transfer is not possible here.

Disk reads here happen on the event loop, unlike media.py's: they are ``stat`` calls and
reads of bytes FFmpeg wrote milliseconds ago (in the page cache, never waiting on the
device), at most a segment's size so far; a hop to a worker thread per inotify wake-up
would add its own delay (and a queue behind the default pool's few threads) to every
chunk, which is what this module exists to avoid. A larger read goes to a thread.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from rtcsite.http import MEDIA_CORS_HEADERS, client_address
from streaming import follow
from streaming.fmp4 import fragments
from streaming.holds import held_requests
from streaming.lowlatency import LowLatency, read_mode

SEGMENT_RE = re.compile(r"^chunk-stream(\d{1,3})-(\d{5,9})\.m4s$")
# Positions of 16 digits or more are no byte position of a file (and Python refuses to
# int() thousands of digits): such a header does not match and is ignored (streaming/media.py
# uses this one too).
RANGE_RE = re.compile(r"^bytes=(\d{0,15})-(\d{0,15})$")
BLOCK = 64 * 1024
INLINE_READ_MAX = 1024 * 1024  # larger reads go to a worker thread
WAIT_SEGMENTS = 3  # a wait ends after this many segment targets (then 503)
CONTENT_TYPE = "video/iso.segment"
IMMUTABLE = "public, max-age=31536000, immutable"  # bytes once written never change
# An open range ``bytes=N-`` answered with the fragment at N means "N to the segment's end"
# once the segment is complete: not to be cached as the answer.
OPEN_RANGE_CACHE = "no-cache"
CORS_HEADERS = MEDIA_CORS_HEADERS


def segment_name(rep: str, number: int) -> str:
    return f"chunk-stream{rep}-{number:05d}.m4s"  # FFmpeg's $Number%05d$


@dataclass(frozen=True)
class Segment:
    folder: Path  # where the run's files are (the stream's folder or its run<k>/)
    rep: str
    number: int
    mode: LowLatency

    @property
    def final(self) -> Path:
        return self.folder / segment_name(self.rep, self.number)

    @property
    def tmp(self) -> Path:
        return self.folder / (segment_name(self.rep, self.number) + ".tmp")

    def sibling(self, number: int) -> Path:
        return self.folder / segment_name(self.rep, number)

    @property
    def within(self) -> float:
        return WAIT_SEGMENTS * self.mode.segment_target


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def state(segment: Segment) -> str | None:
    """``"final"``, ``"writing"``, ``"next"`` (may appear soon) or ``None`` (404 now)."""
    if segment.final.exists():
        return "final"
    if segment.tmp.exists():
        return "writing"
    number = segment.number
    if number < 1:
        return None
    previous_tmp = Path(f"{segment.sibling(number - 1)}.tmp")
    if number > 1 and previous_tmp.exists():
        return "next"
    if number > 1:
        try:
            written = os.stat(segment.sibling(number - 1)).st_mtime
        except OSError:
            return None  # neither the previous segment nor this one: not being written
        # The previous one closed just now (its .tmp renamed, ours not created yet): next.
        # Closed long ago: the encoder stopped, nothing more will come.
        return "next" if time.time() - written < segment.mode.segment_target else None
    # Segment 1: the encoder may not have opened its first segment yet, unless the
    # stream is already past it (then segment 1 is missing: 404). Past it: segment 2 is
    # there, or (2 gone too, scrolled out of the window) the representation's init segment,
    # which FFmpeg writes just before opening segment 1, is older than a wait's bound.
    later = segment.sibling(2)
    if later.exists() or Path(f"{later}.tmp").exists():
        return None
    try:
        started = os.stat(segment.folder / f"init-stream{segment.rep}.m4s").st_mtime
    except OSError:
        return "next"  # not started yet
    return "next" if time.time() - started < segment.within else None


def locate(folder: Path, run_folder: Path, name: str) -> Segment | None:
    """The segment a request names, if it is one of a low-latency folder's."""
    match = SEGMENT_RE.match(name)
    if match is None or segment_name(match[1], int(match[2])) != name:
        return None
    mode = read_mode(folder)
    if mode is None:
        return None
    return Segment(run_folder, match[1], int(match[2]), mode)


# --- fragments of files being written, scanned once per size for all waiters ------------
class _Scans:
    """The fragment scan of each growing file, by size: a change wakes every waiter on the
    folder, and each would otherwise read and parse the same bytes."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._scans: OrderedDict[str, tuple[int, bytes, list]] = OrderedDict()

    async def scan(self, path: Path) -> tuple[bytes, list] | None:
        key = os.fspath(path)
        size = _size(path)
        if size is None:
            return None
        cached = self._scans.get(key)
        if cached is not None and cached[0] == size:
            self._scans.move_to_end(key)
            return cached[1], cached[2]
        data = await _read(path, 0, None)
        if data is None:
            return None
        found, _complete = fragments(data)
        self._scans[key] = (len(data), data, found)
        self._scans.move_to_end(key)
        while len(self._scans) > self.limit:
            self._scans.popitem(last=False)
        return data, found


_scans = _Scans()


def _read_now(path: Path, start: int, length: int | None) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read() if length is None else handle.read(length)
    except OSError:
        return None


async def _read(path: Path, start: int, length: int | None) -> bytes | None:
    size = length if length is not None else (_size(path) or 0) - start
    if size > INLINE_READ_MAX:
        return await asyncio.to_thread(_read_now, path, start, length)
    return _read_now(path, start, length)


async def _read_growing(segment: Segment, start: int, length: int) -> bytes | None:
    """Bytes already on disk, from the .tmp or (renamed meanwhile) the final file."""
    for path in (segment.tmp, segment.final):
        data = await _read(path, start, length)
        if data is not None and len(data) == length:
            return data
    return None


# --- responses ---------------------------------------------------------------------------
def _headers(response: HttpResponse, cache: str) -> HttpResponse:
    for key, value in {**CORS_HEADERS, "Cache-Control": cache, "Accept-Ranges": "bytes"}.items():
        response[key] = value
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _plain(status: int, text: str, **headers: str) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain")
    _headers(response, "no-store")
    for key, value in headers.items():
        response[key.replace("_", "-")] = value
    return response


def _late(segment: Segment, text: str = "The segment was not written in time.") -> HttpResponse:
    return _plain(503, text, Retry_After=str(max(1, math.ceil(segment.mode.segment_target))))


def _unavailable(segment: Segment, error: Exception) -> HttpResponse:
    """inotify cannot watch here (its limits reached, or not Linux): nothing can be held."""
    return _late(segment, f"Cannot wait for this segment: {error}")


def _refused(why: str) -> HttpResponse:
    if why == "client":
        return _plain(429, "Too many requests held open by this client.", Retry_After="1")
    return _plain(503, "Too many requests held open.", Retry_After="1")


def _not_found() -> HttpResponse:
    return _plain(404, "No such media file.")


def _partial(data: bytes, start: int, cache: str) -> HttpResponse:
    response = HttpResponse(data, status=206, content_type=CONTENT_TYPE)
    _headers(response, cache)
    response["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/*"
    response["Content-Length"] = str(len(data))
    return response


def _pending(segment: Segment) -> str | None:
    """After a check found nothing yet: wait on (None), or ``"final"``/``"gone"``. One
    ``state`` call: the segment completing between two looks must not read as gone."""
    current = state(segment)
    if current == "final":
        return "final"
    return None if current in ("writing", "next") else "gone"


async def _held_wait(request: HttpRequest, segment: Segment, check):
    """``check`` now, else held (holds) and re-checked on each change, within the bound.
    Returns what ``check`` found; an HttpResponse (refused, gone, late); or ``None`` when
    the segment is complete (the caller lets the usual path serve the file)."""
    result = await check()
    if result is None:
        with held_requests().hold(client_address(request)) as refused:
            if refused:
                return _refused(refused)
            try:
                result = await follow.wait_for(segment.folder, check, segment.within)
            except FileNotFoundError:
                return _not_found()
            except follow.FollowUnavailable as error:
                return _unavailable(segment, error)
    if result is None:
        return _late(segment)
    if result == "gone":
        return _not_found()
    return None if result == "final" else result


async def serve(request: HttpRequest, segment: Segment) -> HttpResponse | None:
    """The response for a segment not (yet) complete, or ``None``: it is complete now,
    serve the file the usual way."""
    current = state(segment)
    if current is None:
        return _not_found()
    if current == "final":
        return None
    if request.method == "HEAD":
        # What a HEAD is asked for (the length, "is it there": static/js/viewer-page.js
        # waits for a finished first segment) exists once the segment is complete: held
        # until then, then the usual answer with its Content-Length.
        return await _serve_when_final(request, segment)
    header = (request.headers.get("Range") or "").strip()
    match = RANGE_RE.match(header)
    if match and match[1] and match[2]:
        start, end = int(match[1]), int(match[2])
        if end >= start:
            return await _serve_range(request, segment, start, end)
    if match and match[1] and not match[2]:
        return await _serve_from(request, segment, int(match[1]))
    if match and not match[1] and match[2]:  # a suffix: only a complete file has an end
        return await _serve_when_final(request, segment)
    return await _serve_following(request, segment)


async def _serve_range(request: HttpRequest, segment: Segment, start: int, end: int):
    async def check():
        if segment.final.exists():
            return "final"
        size = _size(segment.tmp)
        if size is not None and size > end:
            return "written"
        return _pending(segment)

    result = await _held_wait(request, segment, check)
    if result is None or isinstance(result, HttpResponse):
        return result
    data = await _read_growing(segment, start, end - start + 1)
    if data is None:
        return None  # renamed and shorter than asked: the usual path answers (416)
    return _partial(data, start, IMMUTABLE)


async def _serve_from(request: HttpRequest, segment: Segment, start: int):
    async def check():
        if segment.final.exists():
            return "final"
        scanned = await _scans.scan(segment.tmp)
        if scanned is not None:
            data, found = scanned
            for fragment in found:
                if fragment.offset + fragment.length > start:
                    return data[start : fragment.offset + fragment.length]
        return _pending(segment)

    result = await _held_wait(request, segment, check)
    if result is None or isinstance(result, HttpResponse):
        return result
    return _partial(result, start, OPEN_RANGE_CACHE)


async def _serve_when_final(request: HttpRequest, segment: Segment):
    async def check():
        if segment.final.exists():
            return "final"
        return _pending(segment)

    return await _held_wait(request, segment, check)  # only ever final or a response


class _Release:
    """Gives a hold back exactly once, whichever way the response ends: its body's end,
    Django closing the response, or (a request cancelled before its body started) the
    response being collected."""

    def __init__(self, hold) -> None:
        self._hold = hold

    def __call__(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.__exit__(None, None, None)


class FollowingResponse(StreamingHttpResponse):
    release: _Release

    def close(self) -> None:
        self.release()
        super().close()


async def _serve_following(request: HttpRequest, segment: Segment):
    async def opened():
        current = state(segment)  # one look: a file appearing between two is no 404
        if current in ("final", "writing"):
            return current
        return None if current == "next" else "gone"

    hold = held_requests().hold(client_address(request))
    refused = hold.__enter__()
    if refused:
        hold.__exit__(None, None, None)
        return _refused(refused)
    release = _Release(hold)
    try:
        result = await opened()
        if result is None:
            try:
                result = await follow.wait_for(segment.folder, opened, segment.within)
            except FileNotFoundError:
                result = "gone"
            except follow.FollowUnavailable as error:
                release()
                return _unavailable(segment, error)
        if result is None:
            release()
            return _late(segment)
        if result != "writing":
            release()
            return None if result == "final" else _not_found()
        handle = _open_growing(segment)
        if handle is None:
            release()
            return None
    except BaseException:
        release()
        raise
    response = FollowingResponse(_follow(segment, handle, release), content_type=CONTENT_TYPE)
    response.release = release
    weakref.finalize(response, release)
    response["X-Accel-Buffering"] = "no"  # nginx: pass each chunk on as it comes
    return _headers(response, "no-cache")


def _open_growing(segment: Segment):
    """The file being written, opened: the descriptor stays valid across the rename."""
    for path in (segment.tmp, segment.final):
        try:
            return open(path, "rb", buffering=0)
        except OSError:
            continue
    return None


def _grew(segment: Segment, fd: int, position: int):
    async def check() -> bool | None:
        if segment.final.exists() or os.fstat(fd).st_size > position:
            return True
        return None

    return check


async def _follow(segment: Segment, handle, release: _Release):
    """The file's bytes as they are written, whole fragments only: a fragment's first
    bytes are held back until its last are on disk (FFmpeg writes each in one write, so
    this delays nothing but a lone ``styp``; a reader may still catch a write half done),
    so what a player appends to its buffer always parses. Ends after the last byte once
    the file is renamed, or at the last whole fragment when the file stops growing for a
    wait's bound (the encoder died) or cannot be watched."""
    position = 0  # bytes read from the file
    pending = bytearray()  # read, not sent: the fragment being written (from its start)
    try:
        # The status and headers now ("200 at once"), not with the first whole fragment:
        # Daphne (Twisted) writes them on the body's first write, an empty one included.
        yield b""
        while True:
            # Checked before reading: FFmpeg closes the file before renaming it, so once
            # the final name exists, reading to the end gets the whole segment.
            renamed = segment.final.exists()
            while block := os.pread(handle.fileno(), BLOCK, position):
                position += len(block)
                pending += block
            if renamed:
                if pending:
                    yield bytes(pending)
                return
            _found, complete = fragments(bytes(pending))
            if complete:
                yield bytes(pending[:complete])
                del pending[:complete]

            try:
                grew = _grew(segment, handle.fileno(), position)
                if await follow.wait_for(segment.folder, grew, segment.within) is None:
                    return  # stopped growing: end the body at its last whole fragment
            except (FileNotFoundError, follow.FollowUnavailable):
                return
    finally:
        handle.close()
        release()
