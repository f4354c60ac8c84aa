"""Incremental WebM (Matroska/EBML) structure checker for live upload chunks.

A browser's MediaRecorder cuts one continuous WebM stream into chunks at arbitrary byte
positions, so a chunk is not a file: it can start in the middle of a frame. This module
follows the element *structure* across chunks (element IDs and sizes, never frame
payloads) so the pipeline can:

* refuse a first chunk that is not the start of a WebM stream (EBML magic ``1A 45 DF A3``,
  DocType ``webm``/``matroska``, at least one video track) with a clear message;
* read the source's tracks (codec, width/height, audio) before FFmpeg is started, so the
  bitrate ladder never upscales;
* refuse a later chunk whose bytes do not continue the element structure (an HTML error
  page, a JPEG, random bytes, a second recording's header) *before* FFmpeg sees it, so a
  bad upload does not disturb a healthy stream;
* resynchronise on the next Cluster after bytes were lost (a skipped sequence gap).

``check_source`` then decides whether the site takes that source at all (``UnsupportedSource``
fails the stream, before any pipeline sizes a buffer or starts FFmpeg from the header):

* a frame size of ``MIN_SIDE`` (16) to ``max_side`` (``STREAM_SOURCE_MAX_SIDE``, 4096)
  pixels a side and at most ``max_pixels`` (``STREAM_SOURCE_MAX_PIXELS``, 4096x2160) in
  all; a missing size counts as 0x0. Odd sizes are fine (the encoders round down to even);
* browser codecs only: video VP8, VP9, AV1 or H.264, audio Opus, Vorbis, AAC or PCM
  (``VIDEO_CODECS``, ``AUDIO_CODECS``: what MediaRecorder writes into WebM/Matroska).

Limits, on purpose: frame payloads are not decoded, so corruption *inside* a frame
passes (FFmpeg's decoder conceals it); a garbage chunk that happens to look like valid
element headers is accepted (for random bytes the chance is well below 1 in 1000, see
``docs/decisions.md``). Each check is transactional: a refused chunk leaves the state as
it was, so the next good chunk continues where the last accepted one ended.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

EBML_MAGIC = b"\x1a\x45\xdf\xa3"

# Element IDs (with their length-marker bits, as written in the stream).
ID_EBML = 0x1A45DFA3
ID_DOCTYPE = 0x4282
ID_SEGMENT = 0x18538067
ID_CLUSTER = 0x1F43B675
ID_TRACKS = 0x1654AE6B
ID_TRACK_ENTRY = 0xAE
ID_TRACK_NUMBER = 0xD7
ID_TRACK_TYPE = 0x83
ID_CODEC_ID = 0x86
ID_VIDEO = 0xE0
ID_PIXEL_WIDTH = 0xB0
ID_PIXEL_HEIGHT = 0xBA
ID_AUDIO = 0xE1
ID_SAMPLING_FREQUENCY = 0xB5
ID_CHANNELS = 0x9F
ID_TIMESTAMP = 0xE7
ID_SIMPLE_BLOCK = 0xA3
ID_BLOCK_GROUP = 0xA0
ID_BLOCK = 0xA1
ID_VOID = 0xEC
ID_CRC32 = 0xBF

CLUSTER_ID_BYTES = ID_CLUSTER.to_bytes(4, "big")

# Children of Segment ("level 1").
SEGMENT_CHILDREN = {
    0x114D9B74,  # SeekHead
    0x1549A966,  # Info
    ID_TRACKS,
    ID_CLUSTER,
    0x1C53BB6B,  # Cues
    0x1043A770,  # Chapters
    0x1254C367,  # Tags
    0x1941A469,  # Attachments
    ID_VOID,
    ID_CRC32,
}
# Children of Cluster.
CLUSTER_CHILDREN = {
    ID_TIMESTAMP,
    ID_SIMPLE_BLOCK,
    ID_BLOCK_GROUP,
    0xA7,  # Position
    0xAB,  # PrevSize
    0x5854,  # SilentTracks
    ID_VOID,
    ID_CRC32,
}

# Per-ID payload limits inside a Cluster: the tighter they are, the less likely random bytes
# pass as elements (browsers never write Void or CRC-32 elements inside clusters).
CLUSTER_CHILD_MAX = {ID_TIMESTAMP: 8, 0xA7: 8, 0xAB: 8, ID_CRC32: 4, ID_VOID: 4096, 0x5854: 4096}
BLOCK_GROUP_FIRST_BYTES = {0xA1, 0x9B, 0xFB, 0x75}  # Block, BlockDuration, ReferenceBlock, 75xx
MAX_HEADER_ELEMENT = 1 << 20  # EBML header / Tracks are captured whole: 1 MiB is plenty
DEFAULT_MAX_ELEMENT = 32 << 20  # a single frame (SimpleBlock) above 32 MiB is not a webcam
PAD_LIMIT = 1 << 20  # see WebMStreamChecker.resync()


MIN_SIDE = 16  # pixels: below this a picture is not video (and 4:2:0 planes round to 0)
# Matroska CodecIDs browsers' MediaRecorder writes (H.264 in Chromium's x-matroska).
VIDEO_CODECS = {
    "V_VP8": "VP8",
    "V_VP9": "VP9",
    "V_AV1": "AV1",
    "V_MPEG4/ISO/AVC": "H.264",
}
AUDIO_CODECS = {
    "A_OPUS": "Opus",
    "A_VORBIS": "Vorbis",
    "A_AAC": "AAC",
    "A_PCM/INT/LIT": "PCM",
    "A_PCM/INT/BIG": "PCM",
    "A_PCM/FLOAT/IEEE": "PCM",
}


class WebMError(ValueError):
    """The bytes are not (a continuation of) a WebM stream; the message says why."""


class UnsupportedSource(ValueError):
    """A well-formed WebM whose source the site does not take (frame size, codec).

    Not a refused chunk (``WebMError``): the stream fails. ``reason`` is short, fixed text
    fit for anyone to read (no bytes of the upload beyond the numbers and codec ID).
    """

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Track:
    number: int
    kind: str  # "video", "audio" or "other"
    codec: str
    width: int | None = None
    height: int | None = None
    sample_rate: float | None = None
    channels: int | None = None


@dataclass(frozen=True)
class StreamInfo:
    """What the header says about the source (known once the Tracks element is read)."""

    doc_type: str
    tracks: tuple[Track, ...]

    @property
    def video(self) -> Track | None:
        return next((t for t in self.tracks if t.kind == "video"), None)

    @property
    def audio(self) -> Track | None:
        return next((t for t in self.tracks if t.kind == "audio"), None)


def _printable(codec: str) -> str:
    """A codec ID as it may be shown publicly: bounded, printable ASCII only."""
    text = "".join(c if c.isascii() and c.isprintable() else "?" for c in codec[:32])
    return text or "none"


def check_source(info: StreamInfo, *, max_side: int, max_pixels: int) -> None:
    """Raise ``UnsupportedSource`` unless the site takes this source (see the module doc).

    Pure: the limits are the ``STREAM_SOURCE_*`` settings, passed in by the pipeline.
    """
    video = info.video
    if video is None:  # the checker refuses such a header already; kept for direct callers
        raise UnsupportedSource("unsupported video: no video track")
    if video.codec not in VIDEO_CODECS:
        raise UnsupportedSource(f"unsupported video: codec {_printable(video.codec)}")
    width, height = video.width or 0, video.height or 0
    if (
        not MIN_SIDE <= width <= max_side
        or not MIN_SIDE <= height <= max_side
        or width * height > max_pixels
    ):
        raise UnsupportedSource(f"unsupported video: {width}x{height} frame size")
    audio = info.audio
    if audio is not None and not any(
        audio.codec == known or audio.codec.startswith(known + "/") for known in AUDIO_CODECS
    ):  # AAC comes as A_AAC/MPEG4/LC etc.
        raise UnsupportedSource(f"unsupported audio: codec {_printable(audio.codec)}")


def read_vint(buf: bytes | bytearray, pos: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """Decode an EBML variable-length integer at ``pos``.

    Returns ``(value, length)``; ``None`` if the buffer ends first. ``keep_marker`` keeps
    the length-marker bit (element IDs are compared with it). An unknown size (all value
    bits set) is returned as ``-1``. Raises ``WebMError`` for a zero first byte.
    """
    if pos >= len(buf):
        return None
    first = buf[pos]
    if first == 0:
        raise WebMError("invalid EBML number (first byte 0x00)")
    length = 8 - first.bit_length() + 1
    if pos + length > len(buf):
        return None
    value = first if keep_marker else first & (0xFF >> length)
    for byte in buf[pos + 1 : pos + length]:
        value = (value << 8) | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return -1, length
    return value, length


def _iter_children(payload: bytes):
    pos = 0
    while pos < len(payload):
        ident = read_vint(payload, pos, keep_marker=True)
        if ident is None:
            raise WebMError("truncated element ID inside a header element")
        size = read_vint(payload, pos + ident[1], keep_marker=False)
        if size is None or size[0] < 0:
            raise WebMError("truncated or unknown-size element inside a header element")
        start = pos + ident[1] + size[1]
        end = start + size[0]
        if end > len(payload):
            raise WebMError("element exceeds its header element")
        yield ident[0], payload[start:end]
        pos = end


def _uint(data: bytes) -> int:
    if len(data) > 8:  # EBML unsigned integers are at most 8 bytes
        raise WebMError(f"an unsigned integer element of {len(data)} bytes (at most 8)")
    return int.from_bytes(data, "big") if data else 0


def _float(data: bytes) -> float:
    import struct

    if len(data) == 4:
        return struct.unpack(">f", data)[0]
    if len(data) == 8:
        return struct.unpack(">d", data)[0]
    return 0.0


def parse_ebml_header(payload: bytes) -> str:
    doc_type = ""
    for ident, value in _iter_children(payload):
        if ident == ID_DOCTYPE:
            doc_type = value.rstrip(b"\x00").decode("ascii", "replace")
    if doc_type not in {"webm", "matroska"}:
        raise WebMError(f"EBML DocType is {doc_type or 'missing'!r}, not 'webm'")
    return doc_type


def parse_tracks(payload: bytes) -> tuple[Track, ...]:
    tracks = []
    for ident, entry in _iter_children(payload):
        if ident != ID_TRACK_ENTRY:
            continue
        number, kind, codec = 0, "other", ""
        width = height = channels = None
        sample_rate = None
        for sub, value in _iter_children(entry):
            if sub == ID_TRACK_NUMBER:
                number = _uint(value)
            elif sub == ID_TRACK_TYPE:
                kind = {1: "video", 2: "audio"}.get(_uint(value), "other")
            elif sub == ID_CODEC_ID:
                codec = value.rstrip(b"\x00").decode("ascii", "replace")
            elif sub == ID_VIDEO:
                for leaf, data in _iter_children(value):
                    if leaf == ID_PIXEL_WIDTH:
                        width = _uint(data)
                    elif leaf == ID_PIXEL_HEIGHT:
                        height = _uint(data)
            elif sub == ID_AUDIO:
                channels = 1
                for leaf, data in _iter_children(value):
                    if leaf == ID_SAMPLING_FREQUENCY:
                        sample_rate = _float(data)
                    elif leaf == ID_CHANNELS:
                        channels = _uint(data)
        tracks.append(Track(number, kind, codec, width, height, sample_rate, channels))
    return tuple(tracks)


@dataclass
class _Open:
    """An open master element: its ID and the bytes left (None: unknown size)."""

    ident: int
    remaining: int | None


@dataclass
class _State:
    offset: int = 0  # absolute stream offset of the next byte to parse
    pending: bytes = b""  # an element header cut by the end of the previous chunk
    skip: int = 0  # payload bytes of the current leaf element still to come
    capture_id: int | None = None  # header element being captured whole
    capture: bytearray = field(default_factory=bytearray)
    stack: list[_Open] = field(default_factory=list)
    header_done: bool = False  # EBML header read and DocType accepted
    doc_type: str = ""
    info: StreamInfo | None = None
    block_peek: int | None = None  # element whose first payload bytes are being read
    block_need: int = 0
    block_peek_buf: bytes = b""
    block_at: int = 0
    resyncing: bool = False
    first_cluster_at: int | None = None  # stream offset where the first Cluster starts
    resync_tail: bytes = b""  # last bytes of a dropped chunk: the start of a Cluster ID?

    def copy(self) -> _State:
        clone = copy.copy(self)
        clone.capture = bytearray(self.capture)
        clone.stack = [_Open(o.ident, o.remaining) for o in self.stack]
        return clone


class WebMStreamChecker:
    """Follows the element structure of one WebM stream, chunk by chunk.

    ``check(chunk)`` returns the bytes to forward to FFmpeg (normally the chunk itself; a
    suffix after a resync) or raises ``WebMError`` and leaves the state unchanged.
    """

    def __init__(self, *, max_element: int = DEFAULT_MAX_ELEMENT):
        self.max_element = max_element
        self._s = _State()

    # --- public ------------------------------------------------------------------------
    @property
    def info(self) -> StreamInfo | None:
        return self._s.info

    @property
    def started(self) -> bool:
        return self._s.offset > 0 or bool(self._s.pending)

    @property
    def header_bytes(self) -> int | None:
        """Length of the stream's header (everything before the first Cluster), once seen:
        what a new decoder needs before any Cluster (streaming/runs.py)."""
        return self._s.first_cluster_at

    @property
    def offset(self) -> int:
        """Bytes accepted so far (after resync drops)."""
        return self._s.offset + len(self._s.pending)

    def check(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        state = self._s.copy()
        first = state.offset == 0 and not state.pending
        try:
            head = chunk[: len(EBML_MAGIC)]
            if first and head != EBML_MAGIC[: len(head)]:
                raise WebMError(
                    "the first chunk does not start with the EBML magic 1A 45 DF A3 "
                    f"(got {chunk[:4].hex(' ')})"
                )
            if not first and head == EBML_MAGIC:
                raise WebMError(
                    "a second WebM header: the publisher restarted its recorder; "
                    "a new recording needs a new stream"
                )
            if state.resyncing:
                chunk = self._resync_in(state, chunk)
                if not chunk:
                    self._s = state
                    return b""
            self._parse(state, chunk)
        except WebMError as exc:
            what = "not a WebM stream" if first else "not a continuation of the WebM stream"
            raise WebMError(f"{what}: {exc}") from None
        self._s = state
        return chunk

    def resync(self) -> bytes:
        """Bytes were lost (a skipped gap): wait for the next Cluster.

        Returns filler bytes that complete the element FFmpeg was in the middle of (a cut
        frame), so its demuxer is at an element boundary when the next Cluster arrives;
        empty when there is nothing to complete or it would be too large (FFmpeg then
        resynchronises by itself).
        """
        state = self._s
        filler = b""
        if state.skip and state.capture_id is None and state.skip <= PAD_LIMIT:
            filler = bytes(state.skip)
            for open_ in state.stack:
                if open_.remaining is not None:
                    open_.remaining -= state.skip
        state.skip = 0
        state.pending = b""
        state.block_peek = None
        state.block_peek_buf = b""
        state.offset += len(filler)
        # Known-size clusters that are now incomplete are closed by the resync, too.
        while state.stack and state.stack[-1].ident == ID_CLUSTER:
            state.stack.pop()
        state.resyncing = state.header_done and state.info is not None
        state.resync_tail = b""
        return filler

    # --- internals ---------------------------------------------------------------------
    def _resync_in(self, state: _State, chunk: bytes) -> bytes:
        """Drop bytes up to the next Cluster ID (which may straddle two chunks)."""
        data = state.resync_tail + chunk
        at = data.find(CLUSTER_ID_BYTES)
        while at >= 0:
            try:
                size = read_vint(data, at + 4, keep_marker=False)
            except WebMError:
                at = data.find(CLUSTER_ID_BYTES, at + 1)
                continue
            if size is None or size[0] < 0 or size[0] <= self.max_element * 64:
                state.resyncing = False
                state.resync_tail = b""
                return data[at:]
            at = data.find(CLUSTER_ID_BYTES, at + 1)
        state.resync_tail = data[-(len(CLUSTER_ID_BYTES) - 1) :]
        return b""

    def _context(self, state: _State) -> int | None:
        return state.stack[-1].ident if state.stack else None

    def _consume(self, state: _State, n: int) -> None:
        state.offset += n
        for open_ in state.stack:
            if open_.remaining is not None:
                open_.remaining -= n

    def _close_finished(self, state: _State) -> None:
        while state.stack and state.stack[-1].remaining == 0:
            state.stack.pop()

    def _parse(self, state: _State, chunk: bytes) -> None:
        buf = state.pending + chunk
        base = state.offset  # stream offset of buf[0]
        state.pending = b""
        pos = 0
        while True:
            if state.skip:
                n = min(state.skip, len(buf) - pos)
                if state.capture_id is not None:
                    state.capture += buf[pos : pos + n]
                if state.block_peek is not None:
                    want = state.block_need - len(state.block_peek_buf)
                    state.block_peek_buf += buf[pos : pos + min(n, want)]
                    self._check_block(state)
                state.skip -= n
                pos += n
                self._consume(state, n)
                if state.skip:
                    break  # chunk ends inside this payload
                if state.capture_id is not None:
                    self._finish_capture(state)
            self._close_finished(state)
            if pos >= len(buf):
                break
            try:
                ident = read_vint(buf, pos, keep_marker=True)
                size = None if ident is None else read_vint(buf, pos + ident[1], keep_marker=False)
            except WebMError as exc:
                raise WebMError(f"{exc} at stream offset {base + pos}") from None
            if ident is not None and ident[1] > 4:
                raise WebMError(
                    f"invalid element ID (first byte 0x{buf[pos]:02x}) at stream offset "
                    f"{base + pos}"
                )
            if ident is None or size is None:
                state.pending = bytes(buf[pos:])
                if len(state.pending) > 12:  # an element header is at most 4 + 8 bytes
                    raise WebMError("element header longer than 12 bytes")
                break
            header_len = ident[1] + size[1]
            self._consume(state, header_len)
            self._open_element(state, ident[0], size[0], base + pos)
            pos += header_len

    def _open_element(self, state: _State, ident: int, size: int, at: int) -> None:
        where = f"at stream offset {at}"
        context = self._context(state)
        # An unknown-size Cluster ends where the next Segment child starts.
        while (
            context == ID_CLUSTER
            and ident not in CLUSTER_CHILDREN
            and ident in SEGMENT_CHILDREN
            and state.stack[-1].remaining is None
        ):
            state.stack.pop()
            context = self._context(state)
        if ident == ID_EBML:
            if state.header_done:
                raise WebMError(
                    f"a second WebM header {where}: the publisher restarted its recorder; "
                    "a new recording needs a new stream"
                )
            if context is not None or size < 0 or size > MAX_HEADER_ELEMENT:
                raise WebMError(f"misplaced or oversized EBML header {where}")
            self._start_capture(state, ident, size)
            return
        if not state.header_done:
            raise WebMError(f"expected the EBML header {where}")
        if context is None:
            if ident != ID_SEGMENT:
                raise WebMError(f"unexpected element 0x{ident:X} {where} (expected a Segment)")
            state.stack.append(_Open(ident, None if size < 0 else size))
            return
        if context == ID_SEGMENT:
            allowed = SEGMENT_CHILDREN
        elif context == ID_CLUSTER:
            allowed = CLUSTER_CHILDREN
        else:  # pragma: no cover - only Segment and Cluster are ever opened
            allowed = set()
        if ident not in allowed:
            raise WebMError(
                f"unexpected element 0x{ident:X} {where} inside "
                f"{'a Cluster' if context == ID_CLUSTER else 'the Segment'}"
            )
        parent = state.stack[-1]
        if size >= 0 and parent.remaining is not None and size > parent.remaining:
            raise WebMError(f"element 0x{ident:X} {where} is larger than its parent")
        if ident == ID_CLUSTER:
            if size > self.max_element * 64:
                raise WebMError(f"implausible Cluster size {size} {where}")
            state.stack.append(_Open(ident, None if size < 0 else size))
            if state.info is None:
                raise WebMError(f"a Cluster {where} before the Tracks element")
            if state.first_cluster_at is None:
                state.first_cluster_at = at
            return
        if size < 0:
            raise WebMError(f"unknown-size element 0x{ident:X} {where}")
        if ident == ID_TRACKS:
            if size > MAX_HEADER_ELEMENT:
                raise WebMError(f"oversized Tracks element ({size} bytes) {where}")
            self._start_capture(state, ident, size)
            return
        limit = CLUSTER_CHILD_MAX.get(ident, self.max_element) if context == ID_CLUSTER else None
        if limit is not None and size > limit:
            raise WebMError(f"element 0x{ident:X} {where} claims {size} bytes (limit {limit})")
        if size > self.max_element:
            raise WebMError(
                f"element 0x{ident:X} {where} claims {size} bytes (limit {self.max_element})"
            )
        state.skip = size
        state.block_peek = None
        if ident == ID_TIMESTAMP:
            if not 0 < size <= 8:
                raise WebMError(f"invalid Cluster Timestamp size {size} {where}")
        elif ident == ID_SIMPLE_BLOCK:
            if size < 4:  # track number, 2-byte timestamp, flags
                raise WebMError(f"a frame of {size} bytes {where} is too short")
            state.block_peek, state.block_need = ident, min(size, 8)
        elif ident == ID_BLOCK_GROUP:
            if size < 2:
                raise WebMError(f"an empty BlockGroup {where}")
            state.block_peek, state.block_need = ident, 1
        state.block_peek_buf = b""
        state.block_at = at

    def _start_capture(self, state: _State, ident: int, size: int) -> None:
        state.capture_id = ident
        state.capture = bytearray()
        state.skip = size
        if size == 0:
            self._finish_capture(state)

    def _finish_capture(self, state: _State) -> None:
        payload = bytes(state.capture)
        if state.capture_id == ID_EBML:
            state.doc_type = parse_ebml_header(payload)
            state.header_done = True
        elif state.capture_id == ID_TRACKS:
            tracks = parse_tracks(payload)
            if not any(t.kind == "video" for t in tracks):
                raise WebMError("the WebM stream has no video track")
            state.info = StreamInfo(state.doc_type, tracks)
        state.capture_id = None
        state.capture = bytearray()

    def _check_block(self, state: _State) -> None:
        """Sanity-check a frame's first payload bytes."""
        data = state.block_peek_buf
        if len(data) < state.block_need:
            return
        kind, state.block_peek = state.block_peek, None
        if kind == ID_BLOCK_GROUP:
            if data[0] not in BLOCK_GROUP_FIRST_BYTES:
                raise WebMError(
                    f"a BlockGroup at stream offset {state.block_at} starts with 0x{data[0]:02x}"
                )
            return
        track = read_vint(data, 0, keep_marker=False)
        if track is None or track[0] < 0:
            raise WebMError("a frame without a valid track number")
        numbers = {t.number for t in state.info.tracks} if state.info else set()
        if numbers and track[0] not in numbers:
            raise WebMError(
                f"a frame for track {track[0]} at stream offset {state.block_at}, which the "
                "header does not declare"
            )
        flags = data[track[1] + 2] if len(data) > track[1] + 2 else 0
        if flags & 0x70:  # SimpleBlock flags: bits 1-3 are reserved (zero)
            raise WebMError(
                f"a frame at stream offset {state.block_at} has reserved flag bits set "
                f"(0x{flags:02x})"
            )
