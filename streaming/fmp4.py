"""Fragments of a CMAF segment, as written (low latency: each is an LL-HLS part and an
LL-DASH chunk).

In low-latency mode the encoder writes each segment progressively (``-streaming 1``): a
``styp``, then one ``moof`` + ``mdat`` pair per fragment of ``part_target`` seconds, to
``<segment>.m4s.tmp``, renamed to ``<segment>.m4s`` when the segment closes. The bytes of
a segment are therefore its fragments back to back, and a fragment is complete when its
``mdat`` is complete. ``fragments`` reads them from the bytes on disk so far:

* byte ranges that tile the segment: the first fragment starts at 0 (it carries the
  ``styp``), each next one at its ``moof``, so the parts' bytes concatenated are the
  segment's bytes;
* each fragment's duration in the track's timescale (the ``trun`` sample durations, or
  ``tfhd``'s default per sample), its decode time (``tfdt``) and whether it starts with
  a sync sample (``INDEPENDENT=YES``);
* an incomplete last box is not a fragment yet (``complete`` says where the complete
  data ends).

Pure: bytes in, values out. Limits: one track per file (the dash muxer writes one per
representation), 32-bit box sizes or 64-bit ``largesize``; a box that does not parse
ends the scan there (the caller treats what follows as not written yet).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from streaming.playlists import find_box

TFHD_BASE_DATA_OFFSET = 0x01
TFHD_SAMPLE_DESCRIPTION = 0x02
TFHD_DEFAULT_DURATION = 0x08
TFHD_DEFAULT_SIZE = 0x10
TFHD_DEFAULT_FLAGS = 0x20
TRUN_DATA_OFFSET = 0x01
TRUN_FIRST_FLAGS = 0x04
TRUN_DURATION = 0x100
TRUN_SIZE = 0x200
TRUN_FLAGS = 0x400
TRUN_CTO = 0x800
NON_SYNC = 0x00010000  # sample_is_non_sync_sample in ISO/IEC 14496-12 sample flags


@dataclass(frozen=True)
class Fragment:
    offset: int  # first byte in the segment
    length: int  # bytes (offset + length: the next fragment's offset)
    duration: int  # track timescale units
    decode_time: int | None  # tfdt
    independent: bool  # starts with a sync sample


def _box_header(data: bytes, pos: int) -> tuple[int, bytes, int] | None:
    """(size, type, header length) of the box at ``pos``, or None if not all there."""
    if pos + 8 > len(data):
        return None
    size, kind = struct.unpack_from(">I4s", data, pos)
    header = 8
    if size == 1:
        if pos + 16 > len(data):
            return None
        size = struct.unpack_from(">Q", data, pos + 8)[0]
        header = 16
    if size < header:  # 0 ("to the end of the file") is never written while streaming
        return None
    return size, kind, header


def _traf_facts(data: bytes, start: int, end: int) -> tuple[int, bool, int | None]:
    """(duration, independent, decode time) of the moof at ``data[start:end]``."""
    tfhd = find_box(data, (b"moof", b"traf", b"tfhd"), start, end)
    default_duration = 0
    default_flags = None
    if tfhd is not None:
        flags = int.from_bytes(data[tfhd + 1 : tfhd + 4], "big")
        pos = tfhd + 8  # version/flags, track_ID
        pos += 8 if flags & TFHD_BASE_DATA_OFFSET else 0
        pos += 4 if flags & TFHD_SAMPLE_DESCRIPTION else 0
        if flags & TFHD_DEFAULT_DURATION:
            default_duration = struct.unpack_from(">I", data, pos)[0]
            pos += 4
        pos += 4 if flags & TFHD_DEFAULT_SIZE else 0
        if flags & TFHD_DEFAULT_FLAGS:
            default_flags = struct.unpack_from(">I", data, pos)[0]
    duration = 0
    first_flags = None
    traf = find_box(data, (b"moof", b"traf"), start, end)
    if traf is not None:
        traf_end = start + struct.unpack_from(">I", data, start)[0]
        pos = traf
        while (header := _box_header(data, pos)) is not None and pos < traf_end:
            size, kind, head = header
            if kind == b"trun":
                body = pos + head
                flags = int.from_bytes(data[body + 1 : body + 4], "big")
                count = struct.unpack_from(">I", data, body + 4)[0]
                cursor = body + 8
                cursor += 4 if flags & TRUN_DATA_OFFSET else 0
                if flags & TRUN_FIRST_FLAGS:
                    if first_flags is None:
                        first_flags = struct.unpack_from(">I", data, cursor)[0]
                    cursor += 4
                fields = [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTO]
                per_sample = 4 * sum(1 for f in fields if flags & f)
                if flags & TRUN_DURATION:
                    for index in range(count):
                        duration += struct.unpack_from(">I", data, cursor + index * per_sample)[0]
                else:
                    duration += default_duration * count
                if first_flags is None and flags & TRUN_FLAGS and count:
                    offset = 4 if flags & TRUN_DURATION else 0
                    offset += 4 if flags & TRUN_SIZE else 0
                    first_flags = struct.unpack_from(">I", data, cursor + offset)[0]
            pos += size
    if first_flags is None:
        first_flags = default_flags
    independent = first_flags is None or not first_flags & NON_SYNC
    tfdt = find_box(data, (b"moof", b"traf", b"tfdt"), start, end)
    decode_time = None
    if tfdt is not None:
        wide = data[tfdt] == 1
        decode_time = struct.unpack_from(">Q" if wide else ">I", data, tfdt + 4)[0]
    return duration, independent, decode_time


def fragments(data: bytes) -> tuple[list[Fragment], int]:
    """The complete fragments in a segment's bytes so far, and where complete data ends.

    ``complete`` is the end of the last complete fragment (0 if none): bytes after it
    belong to the fragment being written.
    """
    found: list[Fragment] = []
    pos = 0
    moof: tuple[int, int] | None = None  # (start, end) of the pending moof
    part_start = 0
    complete = 0
    while (header := _box_header(data, pos)) is not None:
        size, kind, _head = header
        end = pos + size
        if end > len(data):
            break
        if kind == b"moof":
            moof = (pos, end)
        elif kind == b"mdat" and moof is not None:
            try:
                duration, independent, decode_time = _traf_facts(data, *moof)
            except (struct.error, IndexError):
                break  # a moof we cannot read: stop, as if not written yet
            found.append(Fragment(part_start, end - part_start, duration, decode_time, independent))
            part_start = complete = end
            moof = None
        pos = end
    return found, complete


def init_timescale(data: bytes) -> int | None:
    """The track's timescale (``mdhd``) from an initialization segment."""
    start = find_box(data, (b"moov", b"trak", b"mdia", b"mdhd"))
    if start is None:
        return None
    offset = start + (20 if data[start] == 1 else 12)
    if offset + 4 > len(data):
        return None
    return struct.unpack_from(">I", data, offset)[0]
