"""Turning a finished live stream's output into a complete VOD (and two FFmpeg fixes).

While live, the dash muxer lists only the last ``window_size`` segments in
``manifest.mpd`` and ``media_<n>.m3u8`` (short playlists keep player reloads cheap). It
keeps every segment file on disk (``extra_window_size`` is huge), but its *final*
manifest and playlists still list only the window: an ended stream would play only its
last seconds. ``finalize_vod`` rewrites them to list every segment, using the segment
files' own ``tfdt`` (decode time) boxes, cross-checked against the muxer's window; if
anything does not match, it leaves FFmpeg's files alone and says so.

``fix_target_duration`` works around FFmpeg writing ``#EXT-X-TARGETDURATION:0`` for
0.5 s segments (it rounds with ``lrint``, half to even); HLS needs at least 1.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from streaming.ffmpeg import HLS_MASTER_NAME, MANIFEST_NAME

logger = logging.getLogger(__name__)

MPD_NS = "urn:mpeg:dash:schema:mpd:2011"
NS = {"mpd": MPD_NS}
for _prefix, _uri in (
    ("", MPD_NS),
    ("xsi", "http://www.w3.org/2001/XMLSchema-instance"),
    ("xlink", "http://www.w3.org/1999/xlink"),
):
    ET.register_namespace(_prefix, _uri)

SEGMENT_RE = re.compile(r"^chunk-stream(?P<rep>\d+)-(?P<num>\d+)\.m4s$")
TARGETDURATION_RE = re.compile(r"^#EXT-X-TARGETDURATION:(\d+)[ \t\r]*$", re.MULTILINE)


def segment_files(output_dir: Path) -> dict[int, dict[int, Path]]:
    """Finished segment files by representation id, then segment number (no ``.tmp``)."""
    found: dict[int, dict[int, Path]] = {}
    try:
        entries = list(os.scandir(output_dir))
    except FileNotFoundError:
        return found
    for entry in entries:
        match = SEGMENT_RE.match(entry.name)
        if match:
            found.setdefault(int(match["rep"]), {})[int(match["num"])] = Path(entry.path)
    return found


def _boxes(data: bytes, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, min(pos + size, end)
        pos += size


def find_box(
    data: bytes, path: tuple[bytes, ...], start: int = 0, end: int | None = None
) -> int | None:
    """Payload offset of the first box along ``path`` (e.g. ``moof/traf/tfdt``), or None."""
    end = len(data) if end is None else end
    head, rest = path[0], path[1:]
    for kind, box_start, box_end in _boxes(data, start, end):
        if kind != head:
            continue
        found = box_start if not rest else find_box(data, rest, box_start, box_end)
        if found is not None:
            return found
    return None


def tfdt_of(data: bytes) -> int | None:
    """The first fragment's ``baseMediaDecodeTime`` in ``data`` (the start of a segment)."""
    start = find_box(data, (b"moof", b"traf", b"tfdt"))
    if start is None:
        return None
    wide = data[start] == 1  # version 1: 64-bit time
    width = 8 if wide else 4
    if start + 4 + width > len(data):
        return None
    return struct.unpack(">Q" if wide else ">I", data[start + 4 : start + 4 + width])[0]


def read_tfdt(path: Path) -> int | None:
    """The first fragment's ``baseMediaDecodeTime`` (track timescale units)."""
    return tfdt_of(path.read_bytes())


@dataclass
class Timeline:
    timescale: int
    start_number: int
    entries: list[tuple[int, int]]  # (t, d) per segment, from start_number on


def _expand(template: ET.Element) -> Timeline:
    timescale = int(template.get("timescale", "1"))
    start_number = int(template.get("startNumber", "1"))
    entries: list[tuple[int, int]] = []
    timeline = template.find("mpd:SegmentTimeline", NS)
    t = 0
    for s in timeline.findall("mpd:S", NS) if timeline is not None else []:
        t = int(s.get("t", t))
        d = int(s.get("d"))
        for _ in range(int(s.get("r", "0")) + 1):
            entries.append((t, d))
            t += d
    return Timeline(timescale, start_number, entries)


def _rle(entries: list[tuple[int, int]]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    expected = None
    for t, d in entries:
        if out and t == expected and int(out[-1]["d"]) == d:
            out[-1]["r"] = str(int(out[-1].get("r", "0")) + 1)
        else:
            item = {"d": str(d)} if t == expected else {"t": str(t), "d": str(d)}
            out.append(item)
        expected = t + d
    return out


def _full_timeline(rep_id: int, window: Timeline, files: dict[int, Path]) -> list[tuple[int, int]]:
    """Every segment's (t, d), from the files' tfdt and the muxer's window."""
    numbers = sorted(files)
    last_window = window.start_number + len(window.entries) - 1
    if not window.entries or numbers != list(range(1, last_window + 1)):
        raise ValueError(
            f"representation {rep_id}: files {numbers[:3]}..{numbers[-3:]} do not match the "
            f"manifest's window {window.start_number}..{last_window}"
        )
    tfdt = {n: read_tfdt(files[n]) for n in numbers}
    if any(v is None for v in tfdt.values()):
        raise ValueError(f"representation {rep_id}: a segment without a tfdt box")
    # The manifest's t is the tfdt shifted by the encoder delay (edit list), e.g. -1024 for
    # AAC; negative times are clamped to 0 by the muxer. Find the shift, then verify it.
    offset = window.entries[-1][0] - tfdt[last_window]
    times = [max(0, tfdt[n] + offset) for n in numbers]
    for index, (t, _d) in enumerate(window.entries):
        if times[window.start_number - 1 + index] != t:
            raise ValueError(
                f"representation {rep_id}: segment {window.start_number + index} has tfdt-based "
                f"t={times[window.start_number - 1 + index]}, manifest t={t}"
            )
    durations = [b - a for a, b in itertools.pairwise(times)]
    durations.append(window.entries[-1][1])
    if any(d <= 0 for d in durations):
        raise ValueError(f"representation {rep_id}: non-increasing segment times")
    return list(zip(times, durations, strict=True))


def _parse_pdt(line: str) -> datetime | None:
    value = line.split(":", 1)[1].strip()
    value = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", value)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _format_pdt(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def _first_pdt(playlist: Path) -> tuple[int, datetime] | None:
    """(media sequence, program date time) of the first segment of an FFmpeg playlist."""
    try:
        text = playlist.read_text()
    except FileNotFoundError:
        return None
    sequence = re.search(r"^#EXT-X-MEDIA-SEQUENCE:(\d+)", text, re.MULTILINE)
    pdt = re.search(r"^#EXT-X-PROGRAM-DATE-TIME:.*$", text, re.MULTILINE)
    if not sequence or not pdt:
        return None
    parsed = _parse_pdt(pdt.group(0))
    return (int(sequence.group(1)), parsed) if parsed else None


def hls_target_duration(durations_s: list[float]) -> int:
    """HLS: every EXTINF rounded to the nearest integer must be <= the target; at least 1."""
    return max(1, max((math.floor(d + 0.5) for d in durations_s), default=1))


def fix_target_duration(text: str) -> str:
    """Raise ``#EXT-X-TARGETDURATION:0`` (FFmpeg, sub-second segments) to a valid value."""
    durations = [float(m) for m in re.findall(r"^#EXTINF:([\d.]+)", text, re.MULTILINE)]
    target = hls_target_duration(durations)

    def repl(match: re.Match) -> str:
        return f"#EXT-X-TARGETDURATION:{max(target, int(match.group(1)))}"

    return TARGETDURATION_RE.sub(repl, text)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".vod.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _hls_playlist(
    rep_id: int,
    timeline: Timeline,
    entries: list[tuple[int, int]],
    pdt: tuple[int, datetime] | None,
) -> str:
    seconds = [d / timeline.timescale for _t, d in entries]
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:6",
        f"#EXT-X-TARGETDURATION:{hls_target_duration(seconds)}",
        "#EXT-X-MEDIA-SEQUENCE:1",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        f'#EXT-X-MAP:URI="init-stream{rep_id}.m4s"',
    ]
    anchor = None
    if pdt is not None and 1 <= pdt[0] <= len(entries):
        anchor = (entries[pdt[0] - 1][0], pdt[1])
    for number, ((t, _d), duration) in enumerate(zip(entries, seconds, strict=True), start=1):
        lines.append(f"#EXTINF:{duration:.6f},")
        if anchor is not None:
            when = anchor[1] + timedelta(seconds=(t - anchor[0]) / timeline.timescale)
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_format_pdt(when)}")
        lines.append(f"chunk-stream{rep_id}-{number:05d}.m4s")
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def finalize_vod(output_dir: Path | str) -> bool:
    """Make the final manifest and HLS playlists list every segment. True if rewritten.

    Call after FFmpeg exited cleanly (its manifest is then ``type="static"`` and its
    playlists end with ``#EXT-X-ENDLIST``). Nothing to do when the live window already
    covered the whole stream.
    """
    output_dir = Path(output_dir)
    manifest = output_dir / MANIFEST_NAME
    tree = ET.parse(manifest)
    root = tree.getroot()
    if root.get("type") != "static":
        raise ValueError(f"{manifest} is not final (type={root.get('type')!r})")
    files = segment_files(output_dir)
    plans = []
    for rep in root.iter(f"{{{MPD_NS}}}Representation"):
        rep_id = int(rep.get("id"))
        template = rep.find("mpd:SegmentTemplate", NS)
        if template is None:
            raise ValueError(f"representation {rep_id} has no SegmentTemplate")
        window = _expand(template)
        rep_files = files.get(rep_id, {})
        if window.start_number == 1 and len(window.entries) == len(rep_files):
            continue
        plans.append((rep_id, template, window, _full_timeline(rep_id, window, rep_files)))
    if not plans:
        return False
    for rep_id, template, window, entries in plans:
        template.set("startNumber", "1")
        timeline = template.find("mpd:SegmentTimeline", NS)
        for child in list(timeline):
            timeline.remove(child)
        for attrs in _rle(entries):
            ET.SubElement(timeline, f"{{{MPD_NS}}}S", attrs)
        playlist = output_dir / f"media_{rep_id}.m3u8"
        if playlist.exists():
            text = _hls_playlist(rep_id, window, entries, _first_pdt(playlist))
            _write_atomic(playlist, text)
    ET.indent(tree, space="\t")
    body = ET.tostring(root, encoding="unicode")
    _write_atomic(manifest, '<?xml version="1.0" encoding="utf-8"?>\n' + body + "\n")
    logger.info(
        "%s: VOD playlists rewritten to list every segment (%s)",
        output_dir,
        ", ".join(f"rep {rep_id}: {len(entries)}" for rep_id, _t, _w, entries in plans),
    )
    return True


__all__ = [
    "HLS_MASTER_NAME",
    "MANIFEST_NAME",
    "finalize_vod",
    "find_box",
    "fix_target_duration",
    "hls_target_duration",
    "read_tfdt",
    "segment_files",
    "tfdt_of",
]
