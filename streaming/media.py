"""Serving ``MEDIA_ROOT/streams/<slug>/<file>``: HLS/DASH playlists, manifests, segments.

For development and small sites; in production nginx serves ``MEDIA_ROOT`` directly with
the same headers (docs/deploy.md). Rules:

* only ``<slug>/<name>`` (or ``<slug>/run<k>/<name>``: a restarted encoder's files,
  streaming/runs.py) with a plain file name and a known extension: no other sub-folders,
  no ``..`` (decoded or not), no absolute paths, no hidden or temporary files;
* no symlinks below ``MEDIA_ROOT/streams``: the stream's folder, its run folder and the file
  must be the things themselves (the pipeline never makes links; a link could point out);
* MIME types: ``.m3u8`` ``application/vnd.apple.mpegurl``, ``.mpd`` ``application/dash+xml``,
  init segments and ``.mp4`` ``video/mp4``, media segments ``.m4s`` ``video/iso.segment``;
* Cache-Control: playlists/manifests ``no-cache`` (they change while live), segments
  ``public, max-age=31536000, immutable``;
* single byte ranges (206, 416 with ``Content-Range: bytes */size``), ``Accept-Ranges``;
* CORS: ``Access-Control-Allow-Origin: *`` on GET/HEAD, preflight answered for ``Range``.

Disk work happens in a worker thread, never on the event loop, and in one hop per request
(the lookup, the stat and a body up to ``INLINE_BODY_MAX``: parts, playlists, most
segments); larger bodies are streamed in blocks.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from django.conf import settings
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
    HttpResponseNotFound,
    StreamingHttpResponse,
)
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from rtcsite.http import MEDIA_CORS_HEADERS
from streaming import growing, llhls_serve
from streaming.clock import read_anchored_playlist
from streaming.ffmpeg import MANIFEST_NAME
from streaming.lldash import low_latency_mpd, on_disk
from streaming.lowlatency import LowLatency, read_mode

BLOCK = 64 * 1024
INLINE_BODY_MAX = 512 * 1024  # bodies up to this are read with the lookup, in one hop
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$")
NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")
RANGE_RE = growing.RANGE_RE  # positions of at most 15 digits: a longer one is no range
MEDIA_PLAYLIST_RE = re.compile(r"^media_\d+\.m3u8$")
RUN_RE = re.compile(r"^run[1-9][0-9]{0,5}$")

PLAYLIST_CACHE = "no-cache"
SEGMENT_CACHE = "public, max-age=31536000, immutable"
TYPES = {
    ".m3u8": ("application/vnd.apple.mpegurl", PLAYLIST_CACHE),
    ".mpd": ("application/dash+xml", PLAYLIST_CACHE),
    ".mp4": ("video/mp4", SEGMENT_CACHE),
    ".m4s": ("video/iso.segment", SEGMENT_CACHE),
    ".m4a": ("audio/mp4", SEGMENT_CACHE),
}
CORS_HEADERS = MEDIA_CORS_HEADERS


def content_type_and_cache(name: str) -> tuple[str, str] | None:
    ext = os.path.splitext(name)[1].lower()
    found = TYPES.get(ext)
    if found is None:
        return None
    if ext == ".m4s" and name.startswith("init"):
        return "video/mp4", SEGMENT_CACHE  # an initialization segment is a plain MP4 header
    return found


def locate(path: str) -> tuple[Path, Path, str] | None:
    """``<slug>[/run<k>]/<name>`` → (the stream's real folder, the real folder the file is
    in, name), the file itself not looked at (streaming/growing.py serves names whose file
    is still being written)."""
    if "\\" in path or "\x00" in path or "%" in path:
        return None  # no backslashes, NULs, or still-encoded (double-encoded) names
    parts = path.split("/")
    if len(parts) == 3 and RUN_RE.match(parts[1]):
        slug, run, name = parts
    elif len(parts) == 2:
        (slug, name), run = parts, ""
    else:
        return None
    if not SLUG_RE.match(slug) or not NAME_RE.match(name) or ".." in name:
        return None
    if content_type_and_cache(name) is None:
        return None
    root = _streams_root()
    if root is None:
        return None
    base = root / slug
    folder = base / run if run else base
    # Directories themselves, not symlinks (lstat): the pipeline makes them with mkdir.
    if not _is_directory(base) or (run and not _is_directory(folder)):
        return None
    return base, folder, name


_roots: dict[str, Path] = {}


def _streams_root() -> Path | None:
    """``MEDIA_ROOT/streams`` resolved (it may sit behind a symlink), once per MEDIA_ROOT:
    resolving a whole path per request cost an ``lstat`` per component."""
    media_root = os.fspath(settings.MEDIA_ROOT)
    root = _roots.get(media_root)
    if root is None:
        try:
            root = (Path(media_root) / "streams").resolve(strict=True)
        except (OSError, RuntimeError):
            return None  # not made yet: looked for again next time
        _roots[media_root] = root
    return root


def _is_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def resolve(path: str) -> tuple[Path, str] | None:
    """``<slug>/<name>`` → the real file inside ``MEDIA_ROOT/streams/<slug>``, or ``None``:
    a regular file itself, not a symlink (in or out of the folder)."""
    located = locate(path)
    if located is None:
        return None
    _base, folder, name = located
    real = folder / name
    try:
        if not stat.S_ISREG(os.lstat(real).st_mode):
            return None
    except OSError:
        return None
    return real, name


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """A single byte range as (start, end inclusive); ``None`` = whole file; ``False`` = 416."""
    if not header:
        return None
    match = RANGE_RE.match(header.strip())
    if not match:
        return None  # multiple ranges or another unit: ignore, send the whole file (RFC 9110)
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return False
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # syntactically invalid: ignore the header
    if start >= size:
        return False
    return start, min(end, size - 1)


async def _read_blocks(path: Path, start: int, length: int):
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        await asyncio.to_thread(handle.seek, start)
        remaining = length
        while remaining > 0:
            block = await asyncio.to_thread(handle.read, min(BLOCK, remaining))
            if not block:
                break  # the file shrank under us: end the body early
            remaining -= len(block)
            yield block
    finally:
        await asyncio.to_thread(handle.close)


def _not_found() -> HttpResponse:
    """404 with the CORS headers: without them a player sees a network error, not a 404."""
    return _with_headers(
        HttpResponseNotFound("No such media file.", content_type="text/plain"), CORS_HEADERS
    )


def _with_headers(response: HttpResponse, headers: dict[str, str]) -> HttpResponse:
    for key, value in headers.items():
        response[key] = value
    return response


def _ranged(request: HttpRequest, size: int, headers: dict[str, str]):
    """The request's byte range over ``size`` bytes: ``(status, start, end)`` with the range
    and length headers added to ``headers``, or the 416 response."""
    byte_range = parse_range(request.headers.get("Range"), size)
    if byte_range is False:
        response = HttpResponse(status=416, content_type="text/plain")
        return _with_headers(response, {**headers, "Content-Range": f"bytes */{size}"})
    if byte_range is None:
        start, end, status = 0, size - 1, 200
    else:
        start, end = byte_range  # type: ignore[misc]
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(max(0, end - start + 1))
    return status, start, end


def _media_headers(cache: str) -> dict[str, str]:
    return {
        **CORS_HEADERS,
        "Cache-Control": cache,
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
    }


def _in_memory(request: HttpRequest, body: bytes, content_type: str, cache: str) -> HttpResponse:
    """A playlist or manifest built per request, answered like a file (ranges, CORS)."""
    headers = _media_headers(cache)
    ranged = _ranged(request, len(body), headers)
    if isinstance(ranged, HttpResponse):
        return ranged
    status, start, end = ranged
    body = b"" if request.method == "HEAD" else body[start : end + 1]
    return _with_headers(HttpResponse(body, status=status, content_type=content_type), headers)


def _low_latency_mpd_text(real: Path, base: Path, time_url: str) -> str | None:
    """The MPD of a low-latency folder (streaming/lldash.py), or None: a standard folder."""
    mode = read_mode(base)
    if mode is None:
        return None
    text = real.read_text(errors="replace")
    try:
        return low_latency_mpd(text, mode, time_url, on_disk(base))
    except ET.ParseError:
        return text  # caught mid-write by a reader not using the atomic rename: as it is


@dataclass(frozen=True)
class _LowLatencyPlaylist:
    real: Path
    name: str
    mode: LowLatency


def _answer(request: HttpRequest, path: str, time_url: str | None, *, growing_: bool = True):
    """Everything a media request needs from the disk, in one worker-thread call: the
    response, or what the event loop must go on with (a segment still being written, a
    low-latency playlist). A hop to a thread costs more than reading a part or a playlist
    (docs/decisions.md, "Stream media past the middleware"), so small bodies are read here
    and only larger ones streamed in blocks."""
    found = resolve(path)
    if found is None and growing_ and growing.SEGMENT_RE.match(path.rsplit("/", 1)[-1]):
        located = locate(path)
        segment = growing.locate(*located) if located is not None else None
        return segment if segment is not None else _not_found()
    if found is None:
        return _not_found()
    real, name = found
    content_type, cache = content_type_and_cache(name)  # type: ignore[misc]
    try:
        if MEDIA_PLAYLIST_RE.match(name):
            if (mode := read_mode(real.parent)) is not None:
                return _LowLatencyPlaylist(real, name, mode)
            body = read_anchored_playlist(real).encode()
            return _in_memory(request, body, content_type, cache)
        if name == MANIFEST_NAME and time_url is not None:
            base = real.parent if path.count("/") == 1 else real.parent.parent
            if (text := _low_latency_mpd_text(real, base, time_url)) is not None:
                return _in_memory(request, text.encode(), content_type, cache)
        return _file(request, real, content_type, cache)
    except OSError:
        return _not_found()  # gone between the look and the read (retention, a new run)


def _file(request: HttpRequest, real: Path, content_type: str, cache: str) -> HttpResponse:
    # O_NOFOLLOW: the file checked by lstat may not have become a link since
    with os.fdopen(os.open(real, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
        found = os.fstat(handle.fileno())
        headers = _media_headers(cache)
        headers["Last-Modified"] = formatdate(found.st_mtime, usegmt=True)
        ranged = _ranged(request, found.st_size, headers)
        if isinstance(ranged, HttpResponse):
            return ranged
        status, start, end = ranged
        length = max(0, end - start + 1)
        if request.method == "HEAD" or length == 0:
            return _with_headers(HttpResponse(status=status, content_type=content_type), headers)
        if length <= INLINE_BODY_MAX:
            body = os.pread(handle.fileno(), length, start)
            if len(body) == length:
                response = HttpResponse(body, status=status, content_type=content_type)
                return _with_headers(response, headers)
    response = StreamingHttpResponse(
        _read_blocks(real, start, length), status=status, content_type=content_type
    )
    return _with_headers(response, headers)


@csrf_exempt  # read-only: other methods get a plain 405, not a CSRF page
async def serve_stream_file(request: HttpRequest, path: str) -> HttpResponse:
    """``GET|HEAD|OPTIONS /media/streams/<slug>/<name>``."""
    if request.method == "OPTIONS":
        response = HttpResponse(status=204)
        return _with_headers(
            response,
            {
                **CORS_HEADERS,
                "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
                "Access-Control-Allow-Headers": "Range",
                "Access-Control-Max-Age": "86400",
            },
        )
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD", "OPTIONS"])
    if ".." in path.split("/") or path.startswith("/"):
        return HttpResponseBadRequest("Bad media path.", content_type="text/plain")
    time_url = None
    if path.rsplit("/", 1)[-1] == MANIFEST_NAME:
        time_url = request.build_absolute_uri(reverse("streaming:time"))
    answer = await asyncio.to_thread(_answer, request, path, time_url)
    if isinstance(answer, growing.Segment):
        response = await growing.serve(request, answer)
        if response is not None:
            return response
        answer = await asyncio.to_thread(_answer, request, path, time_url, growing_=False)
    if isinstance(answer, _LowLatencyPlaylist):
        return await llhls_serve.serve_playlist(request, answer.real, answer.name, answer.mode)
    return answer
