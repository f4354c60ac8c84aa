"""Test media made with the real FFmpeg: WebM clips like a browser's MediaRecorder sends.

``make_webm`` encodes a lavfi test pattern (``testsrc2``) and tone (``sine``) to VP8 +
Opus WebM, written as a live stream (unknown-size Segment, no Cues), like MediaRecorder.
``mediarecorder_chunks`` cuts it the way Chromium's MediaRecorder does with a timeslice:
at time boundaries, right *after* the 1-byte ID of the next frame element (seen in real
Chromium recordings: every chunk after the first starts with a SimpleBlock's size), so
chunks are not self-contained and element headers straddle chunks.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from streaming.ffmpeg import ffmpeg_binary
from streaming.webm import (
    ID_CLUSTER,
    ID_PIXEL_HEIGHT,
    ID_PIXEL_WIDTH,
    ID_SEGMENT,
    ID_SIMPLE_BLOCK,
    ID_TIMESTAMP,
    ID_TRACK_ENTRY,
    ID_TRACKS,
    ID_VIDEO,
    WebMStreamChecker,
    read_vint,
)

EBML_ID_LENGTH = 1  # SimpleBlock (0xA3)


def make_webm(
    path: Path,
    *,
    seconds: float = 8,
    size: str = "640x480",
    fps: int = 30,
    audio: bool = True,
    keyframe_every: int = 60,
    video_input: list[str] | None = None,
) -> Path:
    """Encode a test clip (VP8 + Opus WebM) with the real FFmpeg; returns ``path``.

    ``video_input``: FFmpeg input arguments replacing the ``testsrc2`` pattern (e.g. a looped
    ``.y4m``, see ``astronaut_webm``).
    """
    video = video_input or [
        *("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}"),
    ]
    cmd = [
        ffmpeg_binary(),
        *("-hide_banner", "-nostdin", "-loglevel", "error", "-y"),
        *video,
    ]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    cmd += [
        *("-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M"),
        *("-g", str(keyframe_every), "-auto-alt-ref", "0"),
    ]
    if audio:
        cmd += ["-c:a", "libopus", "-b:a", "64k"]
    cmd += ["-t", str(seconds), "-r", str(fps)]
    cmd += ["-f", "webm", "-live", "1", "-cluster_time_limit", "1000", "pipe:1"]
    done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"FFmpeg could not make the test clip: {done.stderr.decode()[-2000:]}")
    path.write_bytes(done.stdout)
    return path


def cached_webm(directory: Path, **params) -> bytes:
    """``make_webm(**params)`` once per parameter set (and FFmpeg binary) in ``directory``."""
    key = json.dumps({"ffmpeg": Path(ffmpeg_binary()).name, **params}, sort_keys=True)
    path = directory / f"clip-{hashlib.sha256(key.encode()).hexdigest()[:16]}.webm"
    if not path.exists() or path.stat().st_size == 0:
        tmp = path.with_suffix(".tmp")
        make_webm(tmp, **params)
        tmp.replace(path)
    return path.read_bytes()


@dataclass(frozen=True)
class TimedChunk:
    data: bytes
    end_ms: int  # media time of the last frame that starts in this chunk


@dataclass(frozen=True)
class Block:
    """A frame of a WebM stream."""

    track: int
    timestamp_ms: int  # cluster timestamp + block offset, in TimestampScale units (ms)
    offset: int  # absolute byte offset of the element in the stream


def webm_blocks(webm: bytes) -> list[Block]:
    """The SimpleBlocks of a whole WebM stream, in order (Segment and Cluster entered, every
    other element skipped by its size)."""
    blocks: list[Block] = []
    pos = cluster_ms = 0
    while pos < len(webm):
        ident, id_length = read_vint(webm, pos, keep_marker=True)
        size, size_length = read_vint(webm, pos + id_length, keep_marker=False)
        start = pos + id_length + size_length
        if ident in (ID_SEGMENT, ID_CLUSTER):
            pos = start
            continue
        if ident == ID_TIMESTAMP:
            cluster_ms = int.from_bytes(webm[start : start + size], "big")
        elif ident == ID_SIMPLE_BLOCK:
            track, length = read_vint(webm, start, keep_marker=False)
            relative = int.from_bytes(webm[start + length : start + length + 2], "big", signed=True)
            blocks.append(Block(track, cluster_ms + relative, pos))
        pos = start + size
    return blocks


def with_frame_size(webm: bytes, width: int, height: int) -> bytes:
    """``webm`` with its header's PixelWidth/PixelHeight rewritten in place (a lying header,
    as a hostile publisher could send). The new values must fit the elements' byte lengths
    (FFmpeg writes 2 bytes for sizes of 256..65535)."""
    data = bytearray(webm)
    patched = 0

    def walk(pos: int, end: int) -> None:
        nonlocal patched
        while pos < end:
            ident, id_length = read_vint(data, pos, keep_marker=True)
            size, size_length = read_vint(data, pos + id_length, keep_marker=False)
            start = pos + id_length + size_length
            if ident == ID_SEGMENT:
                walk(start, len(data) if size < 0 else start + size)
                return
            if ident == ID_CLUSTER:
                return  # the header is over
            if ident in (ID_TRACKS, ID_TRACK_ENTRY, ID_VIDEO):
                walk(start, start + size)
            elif ident in (ID_PIXEL_WIDTH, ID_PIXEL_HEIGHT):
                value = width if ident == ID_PIXEL_WIDTH else height
                data[start : start + size] = value.to_bytes(size, "big")  # OverflowError if not
                patched += 1
            pos = start + size

    walk(0, len(data))
    if patched != 2:
        raise ValueError(f"{patched} frame size elements found, expected 2")
    return bytes(data)


def mediarecorder_chunks(webm: bytes, timeslice_ms: int = 250) -> list[TimedChunk]:
    """Cut a WebM stream into MediaRecorder-like chunks of ``timeslice_ms`` of media."""
    if WebMStreamChecker().check(webm) != webm:
        raise ValueError("not a clean WebM stream")
    blocks = webm_blocks(webm)
    cuts: list[tuple[int, int]] = []  # (byte offset, media ms of the last frame before)
    boundary = timeslice_ms
    for previous, block in itertools.pairwise(blocks):
        if block.timestamp_ms >= boundary:
            cuts.append((block.offset + EBML_ID_LENGTH, previous.timestamp_ms))
            while boundary <= block.timestamp_ms:
                boundary += timeslice_ms
    chunks = []
    start = 0
    for offset, end_ms in cuts:
        chunks.append(TimedChunk(webm[start:offset], end_ms))
        start = offset
    chunks.append(TimedChunk(webm[start:], blocks[-1].timestamp_ms))
    return chunks


# --- a fake camera that shows a face ---------------------------------------------------------
#: Where OpenCV finds the astronaut's face in ``skimage.data.astronaut()`` (512x512).
ASTRONAUT_FACE = (177, 66, 95, 95)

Rect = tuple[int, int, int, int]  # x, y, w, h


def astronaut_frame(width: int = 640, height: int = 480) -> tuple[np.ndarray, Rect]:
    """The astronaut photo fitted (aspect kept, centred on grey) into a ``width`` x ``height``
    BGR frame, and where its face lands in that frame as ``(x, y, w, h)``.
    """
    import cv2
    import numpy as np
    import skimage.data

    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    scale = min(width / photo.shape[1], height / photo.shape[0])
    w, h = round(photo.shape[1] * scale), round(photo.shape[0] * scale)
    x0, y0 = (width - w) // 2, (height - h) // 2
    frame = np.full((height, width, 3), 128, dtype=np.uint8)
    frame[y0 : y0 + h, x0 : x0 + w] = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
    fx, fy, fw, fh = ASTRONAUT_FACE
    face = (x0 + round(fx * scale), y0 + round(fy * scale), round(fw * scale), round(fh * scale))
    return frame, face


def astronaut_y4m(
    path: Path, width: int = 640, height: int = 480, frames: int = 10, fps: int = 20
) -> tuple[Path, Rect]:
    """Write a still ``.y4m`` clip of the astronaut for ``--use-file-for-fake-video-capture``.

    Chromium loops the file, so a few identical frames make an endless still camera. Returns
    ``(path, face)``, ``face`` being the face rectangle in clip pixels (see astronaut_frame).
    Written once per size: an existing complete file is reused.
    """
    import cv2

    frame, face = astronaut_frame(width, height)
    header = f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode()
    planes = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes()
    size = len(header) + frames * (len(b"FRAME\n") + len(planes))
    if not (path.exists() and path.stat().st_size == size):
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            out.write(header)
            for _ in range(frames):
                out.write(b"FRAME\n")
                out.write(planes)
        tmp.replace(path)
    return path, face


def astronaut_webm(directory: Path, seconds: float = 6, fps: int = 30) -> tuple[bytes, Rect]:
    """A MediaRecorder-like WebM (VP8 + Opus tone) of the still astronaut at 640x480, made
    once per parameter set in ``directory``; returns its bytes and the face rectangle."""
    clip, face = astronaut_y4m(directory / "astronaut-640x480.y4m")
    path = directory / f"astronaut-{seconds:g}s-{fps}fps.webm"
    if not path.exists() or path.stat().st_size == 0:
        tmp = path.with_suffix(".tmp")
        loop = ["-stream_loop", "-1", "-i", str(clip)]
        make_webm(tmp, seconds=seconds, fps=fps, keyframe_every=fps, video_input=loop)
        tmp.replace(path)
    return path.read_bytes(), face


# --- reading stream outputs back -------------------------------------------------------------
def decoded_frames(out: Path, rep: int = 0, last: int | None = None) -> list[np.ndarray]:
    """RGB frames of representation ``rep`` of a stream folder (init segment + its media
    segments in order; only the ``last`` N segments if given), decoded with PyAV."""
    import av

    segments = sorted(out.glob(f"chunk-stream{rep}-*.m4s"))
    if last is not None:
        segments = segments[-last:]
    init = out / f"init-stream{rep}.m4s"
    if not segments or not init.exists():
        return []
    data = io.BytesIO(init.read_bytes() + b"".join(p.read_bytes() for p in segments))
    try:
        with av.open(data, format="mp4") as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except av.error.FFmpegError:  # a segment still being written
        return []


def green_on_top_edge(frame: np.ndarray, box: Rect, source_height: int = 480) -> bool:
    """Is the site's box colour (green) drawn at the middle of ``box``'s top edge? ``box`` is
    in source pixels; ``frame`` may be a smaller rendition of it."""
    x, y, w, _ = box
    scale = frame.shape[0] / source_height
    patch = frame[
        max(0, round((y - 6) * scale)) : round((y + 6) * scale) + 1,
        max(0, round((x + w / 2 - 6) * scale)) : round((x + w / 2 + 6) * scale) + 1,
    ].reshape(-1, 3)
    r, g, b = patch[:, 0].astype(int), patch[:, 1].astype(int), patch[:, 2].astype(int)
    return bool(((g > 170) & (r < 110) & (b < 110)).any())


def check_stitched_vod(out: Path, runs: int, reps: tuple[int, ...] = (0, 1, 2)) -> dict[int, int]:
    """A stream's outputs after ``runs`` encoder runs (streaming/runs.py) as a VOD: every
    segment of every run listed once, in order, numbered from 1 (a killed run's last
    segment may be left out: written after the muxer's last manifest, its duration is not
    known), a discontinuity and a new init section where each run starts, every video
    segment decodable from its run's init segment and starting with a keyframe; a static
    MPD with one Period per run, each listing its run's segments. ``reps``: video rungs
    then audio. Returns the segments listed per representation."""
    import av
    import m3u8
    from mpegdash.parser import MPEGDASHParser

    def listed_ok(listed: int, files: int) -> bool:
        return files - 1 <= listed <= files

    counts = {}
    for rep in reps:
        playlist = m3u8.load(str(out / f"media_{rep}.m3u8"))
        assert playlist.is_endlist and playlist.playlist_type == "vod"
        assert playlist.media_sequence == 1
        uris = [s.uri for s in playlist.segments]
        expected, with_segments = [], 0
        for k in range(runs):
            prefix = f"run{k}/" if k else ""
            files = [prefix + p.name for p in sorted(out.glob(f"{prefix}chunk-stream{rep}-*.m4s"))]
            listed = [u for u in uris if u.startswith(prefix) and (k or "/" not in u)]
            assert listed == files[: len(listed)] and listed_ok(len(listed), len(files)), (
                rep,
                k,
                listed,
                files,
            )
            expected += listed
            with_segments += bool(listed)
        assert uris == expected, uris
        starts = [i for i, s in enumerate(playlist.segments) if s.discontinuity]
        assert len(starts) == with_segments - 1, starts
        for index, segment in enumerate(playlist.segments):
            if index in starts:
                run = segment.uri.split("/")[0]
                assert segment.init_section.uri == f"{run}/init-stream{rep}.m4s"
            if rep == reps[-1]:
                continue  # audio
            init = (out / segment.init_section.uri).read_bytes()
            with av.open(io.BytesIO(init + (out / segment.uri).read_bytes())) as container:
                packets = [p for p in container.demux(video=0) if p.size]
                assert packets and packets[0].is_keyframe, segment.uri
        counts[rep] = len(uris)
    mpd = MPEGDASHParser.parse(str(out / "manifest.mpd"))
    assert mpd.type == "static" and len(mpd.periods) == runs
    previous = -1.0
    for k, period in enumerate(mpd.periods):
        assert period.id == str(k)
        start = float(period.start.removeprefix("PT").removesuffix("S"))
        assert start > previous
        previous = start
        if k:
            assert period.base_urls[0].base_url_value == f"run{k}/"
        folder = out / f"run{k}" if k else out
        for adaptation in period.adaptation_sets:
            for rep in adaptation.representations:
                template = rep.segment_templates[0]
                timelines = template.segment_timelines or []
                listed = sum(int(s.r or 0) + 1 for t in timelines for s in t.Ss or [])
                files = list(folder.glob(f"chunk-stream{rep.id}-*.m4s"))
                assert listed_ok(listed, len(files)), (k, rep.id, listed, len(files))
    return counts
