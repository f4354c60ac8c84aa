"""How many concurrent live 480p streams (default ladder) stay real-time on this machine.

N ``StreamPipeline``s run at once in one event loop (as in one Daphne process), each fed
the same generated 640x480 30 fps VP8 + Opus clip in 250 ms MediaRecorder-like chunks at
1x real time, each with the default ladder for a 480p source (480p + 360p libx264 + AAC,
CMAF HLS + DASH). A step counts as **real-time** when, over all streams, the p95 of
chunk-in → segment-on-disk stays within 2 segment durations, no chunk was refused as
busy (backpressure), and the streams' FFmpeg CPU fits in the machine's cores. N grows
1, 2, 3, ... until a step is not real-time (and one more step to confirm). The peer is
the physical limit: the cores (``os.cpu_count()``) against the CPU one stream needs.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_stream_pipeline import SegmentWatcher, _delays, _setup
from bench.support import percentile

NAME = "stream_capacity"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _one(chunks, out: Path, options, ladder) -> dict[str, Any]:
    from streaming.pipeline import Backpressure, PipelineConfig, StreamPipeline

    fed_at: dict[int, float] = {}
    busy = 0
    pipeline = StreamPipeline(out, PipelineConfig.from_settings(ladder=ladder, encoder=options))
    start = time.monotonic()
    for seq, chunk in enumerate(chunks):
        await asyncio.sleep(max(0.0, start + chunk.end_ms / 1000 - time.monotonic()))
        try:
            await pipeline.feed(seq, chunk.data, wait=0)
        except Backpressure:
            busy += 1
            await pipeline.feed(seq, chunk.data, wait=30)
        fed_at[seq] = time.monotonic()
    fed_end = time.monotonic()
    await pipeline.stop()
    return {"fed_at": fed_at, "busy": busy, "stop_s": time.monotonic() - fed_end}


def step(n: int, chunks, work: Path, options, ladder, seconds: float) -> dict[str, Any]:
    outs = [work / f"n{n}-s{i}" for i in range(n)]
    watchers = [SegmentWatcher(out) for out in outs]
    for watcher in watchers:
        watcher.__enter__()
    cpu0, t0 = _children_cpu(), time.monotonic()
    load0 = os.getloadavg()[0]

    async def go():
        return await asyncio.gather(*(_one(chunks, out, options, ladder) for out in outs))

    try:
        results = asyncio.run(go())
    finally:
        for watcher in watchers:
            watcher.__exit__(None, None, None)
    wall = time.monotonic() - t0
    cpu = _children_cpu() - cpu0
    delays = []
    for result, watcher in zip(results, watchers, strict=True):
        delays += _delays(chunks, result["fed_at"], watcher.appeared, options.segment_seconds)
    for out in outs:
        shutil.rmtree(out, ignore_errors=True)
    p95 = percentile(delays, 95) if delays else float("inf")
    busy = sum(r["busy"] for r in results)
    cores = os.cpu_count() or 1
    cpu_cores = cpu / wall
    realtime = p95 <= 2 * options.segment_seconds and busy == 0 and cpu_cores <= cores
    return {
        "streams": n,
        "realtime": realtime,
        "delay_p50_s": round(statistics.median(delays), 3) if delays else None,
        "delay_p95_s": round(p95, 3),
        "delay_max_s": round(max(delays), 3) if delays else None,
        "busy_refusals": busy,
        "ffmpeg_cpu_cores": round(cpu_cores, 2),
        "cpu_per_stream_media_s": round(cpu / n / seconds, 3),
        "stop_s_max": round(max(r["stop_s"] for r in results), 2),
        "load_at_start": round(load0, 1),
    }


def run(quick: bool) -> dict[str, Any]:
    _setup()
    from streaming.ffmpeg import EncoderOptions
    from streaming.ladder import configured_ladder
    from tests.support.media import make_webm, mediarecorder_chunks

    seconds = 8 if quick else 20
    max_streams = 3 if quick else 12
    options = EncoderOptions.from_settings(live_window_seconds=0)
    ladder = configured_ladder()
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="rtcsite-bench-capacity-"))
    steps = []
    try:
        clip = make_webm(work / "clip.webm", seconds=seconds, size="640x480", fps=30)
        chunks = mediarecorder_chunks(clip.read_bytes(), timeslice_ms=250)
        failures = 0
        for n in range(1, max_streams + 1):
            result = step(n, chunks, work, options, ladder, seconds)
            steps.append(result)
            print(f"  {n} streams: {result}", flush=True)
            failures = 0 if result["realtime"] else failures + 1
            if failures >= 2:
                break
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()
    capacity = max((s["streams"] for s in steps if s["realtime"]), default=0)
    # A step after a failure can pass by luck on a shared machine: capacity is the largest
    # N with every step up to it real-time.
    for s in steps:
        if not s["realtime"]:
            capacity = min(capacity, s["streams"] - 1)
            break
    one = steps[0]["cpu_per_stream_media_s"]
    limit = round((os.cpu_count() or 1) / one, 1) if one else None
    rows = [
        {
            "metric": f"{s['streams']} streams",
            "value": s["delay_p95_s"],
            "unit": "s p95 chunk->segment",
            "realtime": s["realtime"],
            "cpu_cores": s["ffmpeg_cpu_cores"],
            "busy": s["busy_refusals"],
            "load": s["load_at_start"],
        }
        for s in steps
    ]
    rows.append({"metric": "capacity (real-time streams)", "value": capacity, "unit": "streams"})
    rows.append({"metric": "CPU limit (cores / CPU per stream)", "value": limit, "unit": "streams"})
    headline = (
        f"{capacity} concurrent live 480p streams (480p+360p ladder, {options.x264_preset}) "
        f"stay real-time; one stream needs {one} CPU-s per media second, so the cores' limit "
        f"is ~{limit}; load {load_start[0]:.1f}->{load_end[0]:.1f} on a shared "
        f"{os.cpu_count()}-core machine"
    )
    return {
        "name": NAME,
        "rows": rows,
        "ratio": round(capacity / limit, 2) if limit else None,
        "headline": headline,
        "parameters": {
            "clip": f"{seconds} s, 640x480 30 fps VP8 + Opus, 250 ms chunks, 1x real time",
            "segment_seconds": options.segment_seconds,
            "preset": options.x264_preset,
            "ladder": [r.name for r in ladder],
            "realtime_rule": "p95 chunk-in->segment <= 2 segments, no busy, CPU <= cores",
        },
        "steps": steps,
        "loadavg": {"start": list(load_start), "end": list(load_end)},
    }
