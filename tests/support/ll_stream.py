"""A low-latency stream folder being written by the real FFmpeg, without the pipeline.

``ll_encoder`` runs FFmpeg in real time (``-re``) on a lavfi test pattern and tone into
``folder`` with the low-latency dash muxer options (each segment written progressively to
``<segment>.m4s.tmp``, one fragment per part, renamed when it closes), two video rungs
plus audio like the pipeline's ladder, and writes the folder's ``low-latency.json`` and
``clock.json`` as the pipeline does. For origin tests (playlists, held requests, chunked
segments) that need files growing on disk; the pipeline's own LL encode has its tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from streaming.clock import StreamClock, now_ms, write_clock
from streaming.ffmpeg import ffmpeg_binary
from streaming.lowlatency import LowLatency, write_mode


@dataclass
class LLEncoder:
    folder: Path
    mode: LowLatency
    process: subprocess.Popen
    log: Path

    def wait_for_segments(self, count: int, rep: int = 0, timeout: float = 30) -> None:
        """Until ``count`` segments of ``rep`` are complete (renamed) on disk."""
        deadline = time.monotonic() + timeout
        name = self.folder / f"chunk-stream{rep}-{count:05d}.m4s"
        while not name.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"FFmpeg exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name.name} not written in {timeout} s")
            time.sleep(0.05)  # a test's own wait on the encoder (no event to wait on here)

    def stop(self) -> None:
        """Stop as the pipeline does at the end of a stream (FFmpeg finalises its outputs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def ll_command(folder: Path, mode: LowLatency, seconds: float | None = None) -> list[str]:
    limit = [] if seconds is None else ["-t", f"{seconds:g}"]
    gop = round(30 * mode.segment_target)
    return [
        ffmpeg_binary(),
        *("-hide_banner", "-nostats", "-nostdin", "-y", "-loglevel", "warning"),
        *("-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"),
        *("-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
        *limit,
        *("-filter_complex", "[0:v]split=2[a][b];[a]scale=-2:360[v0];[b]scale=-2:180[v1]"),
        *("-map", "[v0]", "-map", "[v1]", "-map", "1:a"),
        *("-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency"),
        *("-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"),
        *("-b:v:0", "800k", "-b:v:1", "200k", "-c:a", "aac", "-b:a", "64k"),
        *("-f", "dash", "-seg_duration", f"{mode.segment_target:g}"),
        *("-streaming", "1", "-frag_type", "duration", "-frag_duration", f"{mode.part_target:g}"),
        *("-use_template", "1", "-use_timeline", "1", "-window_size", "10"),
        *("-extra_window_size", "1000000", "-remove_at_exit", "0"),
        *("-hls_playlist", "1", "-hls_master_name", "master.m3u8"),
        *("-adaptation_sets", "id=0,streams=v id=1,streams=a"),
        str(folder / "manifest.mpd"),
    ]


@contextmanager
def ll_encoder(
    folder: Path,
    *,
    seconds: float | None = None,
    mode: LowLatency | None = None,
) -> Iterator[LLEncoder]:
    mode = mode or LowLatency(part_target=0.2, segment_target=1.0)
    folder.mkdir(parents=True, exist_ok=True)
    write_mode(folder, mode)
    write_clock(folder, StreamClock(now_ms(), "server"))
    log = folder.parent / f"{folder.name}.ffmpeg.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ll_command(folder, mode, seconds),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,
            env={**os.environ, "MALLOC_ARENA_MAX": "2"},
        )
    encoder = LLEncoder(folder, mode, process, log)
    try:
        yield encoder
    finally:
        encoder.stop()


def finished_encode(folder: Path, seconds: float = 5.0) -> Path:
    """A whole LL encode of ``seconds`` (one complete segment per second and rendition),
    FFmpeg's final playlists included; for tests that cut it back to a live state."""
    with ll_encoder(folder, seconds=seconds) as encoder:
        encoder.process.wait(60)
    return folder


def live_playlist(text: str, listed: int) -> str:
    """A final media playlist as it was while live, with its first ``listed`` segments."""
    lines, count = [], 0
    for line in text.splitlines():
        if line.startswith("#EXT-X-ENDLIST"):
            continue
        if line.startswith("#EXTINF") and count == listed:
            break
        lines.append(line)
        count += not line.startswith("#")
    return "\n".join(lines) + "\n"
