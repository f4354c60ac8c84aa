"""How long a chunk takes from the pipeline's feed to its fragment on disk (low latency).

Runs the real ``StreamPipeline`` in low-latency mode (``STREAM_LL_*``) on a generated
VP8+Opus WebM cut into MediaRecorder-like chunks, fed in real time, and watches
``<segment>.m4s.tmp`` of the top rung grow. For each complete video fragment: the wall time
it was complete on disk minus the time the chunk holding its last frame was fed. Variants
add FFmpeg options to the pipeline's command, to see whether anything in it adds latency
(muxing interleave, packet flushing, input probing). A figure for docs/decisions.md, not
a test::

    .venv/bin/python scripts/ll_encoder_delay.py [--seconds 12] [--timeslice 100] [variant ...]

Variants: ``base`` (the pipeline's command), ``framethreads`` (without its ``-flags
low_delay`` on the input), ``threads1`` (``-threads 1`` instead), ``interleave0``/``1``
(``-max_interleave_delta``), ``flush`` (``-flush_packets 1``), ``probe`` (FFmpeg's default
input probing), ``noaudio`` (a video-only clip).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")

import django

django.setup()

from streaming import fmp4  # noqa: E402
from streaming import pipeline as pipeline_module  # noqa: E402
from streaming.ffmpeg import EncoderOptions  # noqa: E402
from streaming.pipeline import PipelineConfig, StreamPipeline  # noqa: E402
from tests.support.media import cached_webm, mediarecorder_chunks  # noqa: E402

VARIANTS = {
    "base": [],
    "interleave0": ["-max_interleave_delta", "0"],  # 0: wait for every stream (no limit)
    "interleave1": ["-max_interleave_delta", "1"],  # 1 µs: write each packet as it comes
    "noaudio": [],  # a video-only clip
    # without the command's ``-flags low_delay`` on the input: frame-threaded VP8 decoding
    "framethreads": ["@drop-low-delay"],
    "threads1": ["@drop-low-delay", "@in", "-threads", "1"],  # single-threaded instead
    "flush": ["-flush_packets", "1"],
    "probe": None,  # STREAM_LOW_LATENCY_INPUT off: FFmpeg probes its input first
}


def with_output_options(extra: list[str]):
    """The pipeline's ``build_command`` with ``extra`` output options before the manifest."""
    original = pipeline_module.build_command

    def build(*args, **kwargs):
        cmd = original(*args, **kwargs)
        rest = list(extra)
        if rest[:1] == ["@drop-low-delay"]:
            at = cmd.index("low_delay") - 1
            cmd, rest = [*cmd[:at], *cmd[at + 2 :]], rest[1:]
        if rest[:1] == ["@in"]:
            at = cmd.index("pipe:0") - 1  # -i
            return [*cmd[:at], *rest[1:], *cmd[at:]]
        return [*cmd[:-1], *rest, cmd[-1]]

    return build


def scan(folder: Path, sizes: dict[str, int], found: dict, timescale: int | None) -> int | None:
    """Note when each fragment of the top rung is first seen complete; the timescale."""
    now = time.monotonic()
    init = folder / "init-stream0.m4s"
    if timescale is None and init.exists():
        timescale = fmp4.init_timescale(init.read_bytes())
    if timescale is None:
        return None
    for entry in os.scandir(folder):
        name = entry.name
        if not name.startswith("chunk-stream0-"):
            continue
        try:
            size = entry.stat().st_size
            if sizes.get(name) == size:
                continue
            sizes[name] = size
            data = Path(entry.path).read_bytes()
        except FileNotFoundError:  # renamed meanwhile: seen next time
            continue
        for fragment in fmp4.fragments(data)[0]:
            start = fragment.decode_time
            found.setdefault((start, start + fragment.duration, timescale), now)
    return timescale


async def watch(folder: Path, found: dict[tuple[int, int, int], float], done: asyncio.Event):
    """Scan every 2 ms (in a thread: the loop goes on feeding)."""
    sizes: dict[str, int] = {}
    timescale = None
    while not done.is_set():
        timescale = await asyncio.to_thread(scan, folder, sizes, found, timescale)
        await asyncio.sleep(0.002)


async def run(
    variant: str, seconds: float, timeslice: int, clip_dir: Path
) -> tuple[list[float], list[float]]:
    """Per fragment: ms from the feed of the chunk holding its last frame, and ms from that
    frame's media time on the feed's clock (the chunk's wait in the browser included)."""
    audio = variant != "noaudio"
    webm = cached_webm(clip_dir, seconds=seconds, size="640x480", fps=30, audio=audio)
    chunks = mediarecorder_chunks(webm, timeslice_ms=timeslice)
    extra = VARIANTS[variant]
    overrides = {"low_latency_input": extra is not None}
    encoder = EncoderOptions.from_settings(low_latency=True, **overrides)
    original = pipeline_module.build_command
    pipeline_module.build_command = with_output_options(extra or [])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "s"
            folder.mkdir()
            pipe = StreamPipeline(folder, PipelineConfig.from_settings(encoder=encoder))
            found: dict[tuple[int, int, int], float] = {}
            done = asyncio.Event()
            watcher = asyncio.create_task(watch(folder, found, done))
            fed: list[float] = []
            start = time.monotonic()  # media time 0 on the feed's clock
            for seq, chunk in enumerate(chunks):
                await asyncio.sleep(max(0.0, start + chunk.end_ms / 1000 - time.monotonic()))
                await pipe.feed(seq, chunk.data, wait=5)
                fed.append(time.monotonic())
            await asyncio.sleep(2)
            done.set()
            await watcher
            await pipe.stop()
    finally:
        pipeline_module.build_command = original
    delays, from_media = [], []
    first = min(start for start, _, _ in found)  # media time 0 of the output
    for (_start, end, timescale), at in sorted(found.items()):
        last_frame_ms = (end - first) / timescale * 1000 - 1000 / 30
        holder = next((i for i, c in enumerate(chunks) if c.end_ms >= last_frame_ms - 1), None)
        if holder is None or holder == len(chunks) - 1:
            continue  # the last chunk: written at the stop, not live
        delays.append((at - fed[holder]) * 1000)
        from_media.append((at - start) * 1000 - last_frame_ms)
    # the start (encoder spawn, first keyframe) is not steady state
    return delays[3:], from_media[3:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", default=["base"], choices=[*VARIANTS, []])
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--timeslice", type=int, default=100)
    args = parser.parse_args()
    clip_dir = Path(tempfile.gettempdir()) / "rtcsite-ll-delay-clips"
    clip_dir.mkdir(exist_ok=True)
    for variant in args.variants or ["base"]:
        load = os.getloadavg()[0]
        delays, from_media = asyncio.run(run(variant, args.seconds, args.timeslice, clip_dir))
        q = statistics.quantiles(delays, n=20)
        m = statistics.quantiles(from_media, n=20)
        print(
            f"{variant:12s} chunk {args.timeslice} ms: fed → fragment on disk "
            f"p50 {statistics.median(delays):.0f} ms, p95 {q[-1]:.0f} ms, "
            f"min {min(delays):.0f}, max {max(delays):.0f}; part's last frame → on disk "
            f"p50 {statistics.median(from_media):.0f} ms, p95 {m[-1]:.0f} ms "
            f"(n={len(delays)}; load {load:.2f} → {os.getloadavg()[0]:.2f}, "
            f"{os.cpu_count()} cores)",
            flush=True,
        )


if __name__ == "__main__":
    main()
