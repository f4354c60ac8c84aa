"""How a WebRTC publisher's decoded frames reach the encoder: raw frames vs an in-process encode.

aiortc decodes every received track, so a WHIP publisher's media reaches the server as
decoded frames. Two ways into the stream's one FFmpeg (the same ladder, CMAF outputs):

* **raw** (what the site does): ``StreamPipeline.start_raw``: frames converted to yuv420p
  and written on a constant-rate schedule to FFmpeg's stdin as raw video, PCM on a pipe
  (streaming/rawfeed.py);
* **vp8**: encode the frames in this process with PyAV (libvpx VP8 realtime + libopus, as a
  browser's MediaRecorder would), mux WebM in memory and feed it as 100 ms chunks through
  the chunk path (``StreamPipeline.feed``), FFmpeg decoding it again.

The same decoded 640x480 frames (a moving pattern) and 20 ms audio frames are fed at 30 fps
in real time to both; CPU = this process (``RUSAGE_SELF``, its threads included) plus the
reaped FFmpeg (``RUSAGE_CHILDREN``), per media second. Rounds alternate (ABBA). The machine
is shared: the load average is recorded before and after.
"""

from __future__ import annotations

import asyncio
import fractions
import io
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "whip_input"
FPS = 30
WIDTH, HEIGHT = 640, 480


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
    import django

    django.setup()


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _frames(seconds: float) -> tuple[list[Any], list[Any]]:
    import av
    import numpy as np

    video = []
    for i in range(round(seconds * FPS)):
        image = np.full((HEIGHT, WIDTH, 3), 60, np.uint8)
        x = (i * 7) % (WIDTH - 60)
        image[:, x : x + 60] = (250, 180, 20)
        image[(i * 5) % (HEIGHT - 30) :][:30] = 200
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        video.append(frame)
    audio = []
    for i in range(round(seconds * 50)):
        t = (np.arange(960) + i * 960) / 48000
        tone = (np.sin(2 * np.pi * 440 * t) * 6000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts = 48000, i * 960
        frame.time_base = fractions.Fraction(1, 48000)
        audio.append(frame)
    return video, audio


class _Collect(io.RawIOBase):
    """A write-only file for PyAV's muxer that hands out what was written since last asked."""

    def __init__(self) -> None:
        self.pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.pending += data
        return len(data)

    def take(self) -> bytes:
        data, self.pending = bytes(self.pending), bytearray()
        return data


async def _paced(video, audio, on_video, on_audio) -> None:
    start = time.monotonic()
    v = a = 0
    while v < len(video):
        elapsed = time.monotonic() - start
        while v < len(video) and v / FPS <= elapsed:
            on_video(video[v])
            v += 1
        while a < len(audio) and a * 0.02 <= elapsed:
            on_audio(audio[a])
            a += 1
        await asyncio.sleep(0.004)


async def _run_raw(out: Path, video, audio) -> dict[str, Any]:
    from streaming.pipeline import PipelineConfig, RawSource, StreamPipeline

    pipeline = StreamPipeline(out, PipelineConfig.from_settings())
    await pipeline.start_raw(RawSource(WIDTH, HEIGHT, has_audio=True))
    await _paced(video, audio, pipeline.feed_video, pipeline.feed_audio)
    await pipeline.stop()
    return {"state": str(pipeline.state), "frames": pipeline.stats()["webrtc_input"]}


async def _run_vp8(out: Path, video, audio) -> dict[str, Any]:
    import av

    from streaming.pipeline import PipelineConfig, StreamPipeline

    pipeline = StreamPipeline(out, PipelineConfig.from_settings())
    sink = _Collect()
    container = av.open(sink, mode="w", format="webm", options={"live": "1"})
    vstream = container.add_stream("libvpx", rate=FPS)
    vstream.width, vstream.height, vstream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    vstream.bit_rate = 1_500_000
    vstream.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    astream = container.add_stream("libopus", rate=48000, layout="stereo")
    seq = 0

    def on_video(frame) -> None:
        copy = frame.reformat()
        copy.pts, copy.time_base = frame.pts // 3000, fractions.Fraction(1, FPS)
        for packet in vstream.encode(copy):
            container.mux(packet)

    def on_audio(frame) -> None:
        for packet in astream.encode(frame):
            container.mux(packet)

    async def chunks() -> None:
        nonlocal seq
        while True:
            await asyncio.sleep(0.1)
            data = sink.take()
            if data:
                await pipeline.feed(seq, data, wait=5)
                seq += 1

    feeder = asyncio.create_task(chunks())
    await _paced(video, audio, on_video, on_audio)
    for stream in (vstream, astream):
        for packet in stream.encode(None):
            container.mux(packet)
    await asyncio.sleep(0.3)
    feeder.cancel()
    data = sink.take()
    if data:
        await pipeline.feed(seq, data, wait=5)
    await pipeline.stop()
    container.close()
    return {"state": str(pipeline.state), "chunks": seq + 1}


def _measure(kind: str, seconds: float, video, audio) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        own0, child0 = _cpu()
        wall0 = time.monotonic()
        run = _run_raw if kind == "raw" else _run_vp8
        detail = asyncio.run(run(Path(tmp) / "stream", video, audio))
        wall = time.monotonic() - wall0
        own1, child1 = _cpu()
    return {
        "kind": kind,
        "python_cores": (own1 - own0) / seconds,
        "ffmpeg_cores": (child1 - child0) / seconds,
        "total_cores": (own1 - own0 + child1 - child0) / seconds,
        "wall_s": wall,
        **detail,
    }


def run(quick: bool) -> dict[str, Any]:
    from bench.runner import result

    _setup()
    seconds = 4.0 if quick else 12.0
    rounds = 1 if quick else 2
    video, audio = _frames(seconds)
    load_before = os.getloadavg()
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        order = ["raw", "vp8"] if r % 2 == 0 else ["vp8", "raw"]
        for kind in order:
            runs.append(_measure(kind, seconds, video, audio))
    load_after = os.getloadavg()

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["kind"] == kind)

    rows = []
    for kind, label in (("raw", "raw frames to FFmpeg"), ("vp8", "in-process VP8 encode")):
        for key in ("python_cores", "ffmpeg_cores", "total_cores"):
            rows.append(
                {
                    "metric": f"{label}: {key.replace('_', ' ')}",
                    "value": round(med(kind, key), 3),
                    "unit": "cores",
                }
            )
    ratio = round(med("vp8", "total_cores") / med("raw", "total_cores"), 2)
    headline = (
        f"raw frames {med('raw', 'total_cores'):.2f} cores vs in-process VP8 "
        f"{med('vp8', 'total_cores'):.2f} cores per 640x480@30 publisher ({ratio}x)"
    )
    return result(
        NAME,
        rows,
        ratio,
        headline,
        {"seconds": seconds, "rounds": rounds, "fps": FPS, "size": f"{WIDTH}x{HEIGHT}"},
        {"runs": runs, "load_before": load_before, "load_after": load_after},
    )
