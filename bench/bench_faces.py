"""Face detection: detector cost per frame, and pushed-frame round trips, WebSocket vs HTTP.

Part 1, in this process: the shared detector (``faces.detector.FaceDetector``, one OpenCV
thread) on the astronaut fitted into a 640x480 frame (``tests.support.media.astronaut_frame``)
at full size (``detect_width=0``) and with the default 320-px resize. Per frame: median and
p90 ms; **frames/s per core** = frames / CPU seconds of the detecting thread, which stays
meaningful on a shared machine where wall time also counts other people's work.

Part 2, a real Daphne (``bench.support.daphne_site``, embedded setup, ``FACE_MAX_FPS`` and
the per-identity ``FACE_DETECT_BUDGET`` raised so the limits are not what is measured): one
client pushes the same 640x480 WebP frame (quality 80, like the page) in lockstep — send,
wait for the answer, send the next: exactly the page's one-frame-in-flight rule — over
``/ws/faces/`` (binary message, ``websockets`` client) and over ``POST /faces/detect/``
(one keep-alive ``http.client`` connection).
Rounds alternate between the transports, so other load on the machine hits both alike.
Reported: round-trip median/p90, frames/s, and the server's own decode+detect time
(``detect_ms`` in each answer): round trip minus that is the transport's overhead.

Part 3, the live-stream overlay (``streaming/overlay.py``): a 640x480 30 fps WebM of the
astronaut (VP8 + Opus, ``tests.support.media.astronaut_webm``) fed as MediaRecorder-like
chunks as fast as the pipeline takes them, through the real ``StreamPipeline`` with
``face_overlay`` on and off (rounds alternate; default ladder: 480p + 360p). Reported: the
speed as a multiple of real time (media seconds / wall seconds from first chunk to
finalised playlists; >= 1 means it keeps up with a live camera) and the overlay's
detections per second of video. The plain pipeline on the same input is the peer.

The comparison in the same run: each transport against the other, and both against the
in-process detection time (the limit a transport can approach). The load average at start
and end is recorded: the machine is shared.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.support import (
    EMBEDDED_ENV,
    daphne_site,
    exit_cleanly_on_sigterm,
    make_tokens,
    percentile,
)

NAME = "faces"


@dataclass(frozen=True)
class Params:
    detect_frames: int
    push_frames: int  # per round and transport
    rounds: int
    overlay_seconds: int  # clip length for part 3
    overlay_rounds: int


FULL = Params(detect_frames=300, push_frames=100, rounds=3, overlay_seconds=10, overlay_rounds=2)
QUICK = Params(detect_frames=20, push_frames=10, rounds=1, overlay_seconds=3, overlay_rounds=1)


def _frame_and_webp() -> tuple[Any, bytes]:
    import cv2

    from tests.support.media import astronaut_frame

    frame, _face = astronaut_frame(640, 480)
    ok, webp = cv2.imencode(".webp", frame, [cv2.IMWRITE_WEBP_QUALITY, 80])
    assert ok
    return frame, webp.tobytes()


# --- part 1: the detector ---------------------------------------------------------------
def detector_part(p: Params, frame) -> dict[str, dict[str, Any]]:
    from faces.detector import DetectorParams, FaceDetector

    results: dict[str, dict[str, Any]] = {}
    for label, width in (("640x480 full size", 0), ("320-px resize", 320)):
        detector = FaceDetector(DetectorParams(detect_width=width), opencv_threads=1)
        out: dict[str, Any] = {}

        def work(detector=detector, out=out) -> None:
            detector.detect(frame)  # warm: the thread's cascade is loaded
            times = []
            cpu0 = time.thread_time()
            for _ in range(p.detect_frames):
                started = time.perf_counter()
                boxes = detector.detect(frame)
                times.append((time.perf_counter() - started) * 1000)
            out["cpu_s"] = time.thread_time() - cpu0
            out["times"] = times
            out["boxes"] = len(boxes)

        thread = threading.Thread(target=work)  # thread_time() is this thread's CPU only
        thread.start()
        thread.join()
        times = out["times"]
        results[label] = {
            "detect_width": width,
            "median_ms": round(statistics.median(times), 3),
            "p90_ms": round(percentile(times, 90), 3),
            "frames_per_cpu_s": round(len(times) / out["cpu_s"], 1),
            "frames_per_wall_s": round(1000 * len(times) / sum(times), 1),
            "boxes": out["boxes"],
        }
    return results


# --- part 2: pushing frames ------------------------------------------------------------------
async def ws_round(port: int, token: str, webp: bytes, count: int) -> dict[str, Any]:
    import websockets

    url = f"ws://127.0.0.1:{port}/ws/faces/?token={token}&v=1"
    rtts, detects, errors = [], [], 0
    async with websockets.connect(url, max_size=None, origin=f"http://127.0.0.1:{port}") as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        started = time.perf_counter()
        for _ in range(count):
            sent = time.perf_counter()
            await ws.send(webp)
            reply = json.loads(await ws.recv())
            rtts.append((time.perf_counter() - sent) * 1000)
            if reply.get("type") == "faces":
                detects.append(reply["detect_ms"])
            else:
                errors += 1
        elapsed = time.perf_counter() - started
    return {"rtts": rtts, "detects": detects, "errors": errors, "elapsed_s": elapsed}


def http_round(port: int, token: str, webp: bytes, count: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/webp"}
    rtts, detects, errors = [], [], 0
    started = time.perf_counter()
    try:
        for _ in range(count):
            sent = time.perf_counter()
            conn.request("POST", "/faces/detect/", body=webp, headers=headers)
            response = conn.getresponse()
            body = json.loads(response.read())
            rtts.append((time.perf_counter() - sent) * 1000)
            if response.status == 200:
                detects.append(body["detect_ms"])
            else:
                errors += 1
    finally:
        conn.close()
    return {
        "rtts": rtts,
        "detects": detects,
        "errors": errors,
        "elapsed_s": time.perf_counter() - started,
    }


def push_part(p: Params, webp: bytes) -> dict[str, Any]:
    tokens = make_tokens(2, prefix="bench-faces")
    env = {
        **EMBEDDED_ENV,
        "FACE_MAX_FPS": "100000",
        "FACE_DETECT_BUDGET": "1000",  # CPU-s per s: the lockstep client is never in debt
        "FACE_DETECT_BUDGET_BURST": "1000",
    }
    report: dict[str, Any] = {}
    rounds: dict[str, list[dict[str, Any]]] = {"ws": [], "http": []}
    with daphne_site(env, report=report) as server:
        port = server.port
        # Warm-up: the server's detection threads load their cascades.
        asyncio.run(ws_round(port, tokens[0], webp, 3))
        http_round(port, tokens[1], webp, 3)
        for _ in range(p.rounds):
            rounds["ws"].append(asyncio.run(ws_round(port, tokens[0], webp, p.push_frames)))
            rounds["http"].append(http_round(port, tokens[1], webp, p.push_frames))
    summary = {}
    for name, results in rounds.items():
        rtts = [t for r in results for t in r["rtts"]]
        detects = [t for r in results for t in r["detects"]]
        frames = sum(len(r["rtts"]) for r in results)
        summary[name] = {
            "rtt_median_ms": round(statistics.median(rtts), 3),
            "rtt_p90_ms": round(percentile(rtts, 90), 3),
            "fps": round(frames / sum(r["elapsed_s"] for r in results), 1),
            "fps_rounds": [round(len(r["rtts"]) / r["elapsed_s"], 1) for r in results],
            "server_detect_median_ms": round(statistics.median(detects), 3) if detects else None,
            "errors": sum(r["errors"] for r in results),
            "frames": frames,
        }
        s = summary[name]
        if s["server_detect_median_ms"] is not None:
            s["overhead_median_ms"] = round(s["rtt_median_ms"] - s["server_detect_median_ms"], 3)
    return {"summary": summary, "log_errors": report.get("log_errors", {})}


# --- part 3: the overlay in the live pipeline ---------------------------------------------------
async def pipeline_round(webm: bytes, out: Path, face_overlay: bool) -> dict[str, Any]:
    from streaming.ffmpeg import EncoderOptions
    from streaming.pipeline import PipelineConfig, StreamPipeline
    from tests.support.media import mediarecorder_chunks

    encoder = EncoderOptions.from_settings(segment_seconds=1.0, live_window_seconds=0)
    config = PipelineConfig.from_settings(encoder=encoder, face_overlay=face_overlay)
    pipeline = StreamPipeline(out, config)
    chunks = mediarecorder_chunks(webm, timeslice_ms=250)
    started = time.perf_counter()
    for seq, chunk in enumerate(chunks):
        await pipeline.feed(seq, chunk.data, wait=60)
    state = await pipeline.stop()
    elapsed = time.perf_counter() - started
    result = {
        "elapsed_s": round(elapsed, 3),
        "media_s": chunks[-1].end_ms / 1000,
        "state": str(state),
        "segments": pipeline.segments_written(),
    }
    if face_overlay and pipeline.process is not None:
        result["overlay"] = pipeline.process.stats.as_dict()
    return result


def overlay_part(p: Params) -> dict[str, Any]:
    from tests.support.media import astronaut_webm

    rounds: dict[str, list[dict[str, Any]]] = {"plain": [], "overlay": []}
    with tempfile.TemporaryDirectory(prefix="bench-faces-") as tmp:
        work = Path(tmp)
        webm, _face = astronaut_webm(work, seconds=p.overlay_seconds)
        for i in range(p.overlay_rounds):
            for name in ("plain", "overlay"):
                out = work / f"{name}-{i}"
                rounds[name].append(asyncio.run(pipeline_round(webm, out, name == "overlay")))
    summary: dict[str, Any] = {}
    for name, results in rounds.items():
        speeds = [r["media_s"] / r["elapsed_s"] for r in results]
        summary[name] = {"x_real_time": round(statistics.median(speeds), 2), "rounds": results}
    overlay = [r["overlay"] for r in rounds["overlay"] if "overlay" in r]
    if overlay:
        media = rounds["overlay"][0]["media_s"]
        summary["overlay"]["detections_per_media_s"] = round(
            statistics.median(o["detections"] for o in overlay) / media, 1
        )
        means = [o["detect_ms_mean"] for o in overlay if o["detect_ms_mean"] is not None]
        summary["overlay"]["detect_ms_mean"] = statistics.median(means) if means else None
    return summary


# --- the run ---------------------------------------------------------------------------------
def run(quick: bool) -> dict[str, Any]:
    with exit_cleanly_on_sigterm():
        return _run(quick)


def _run(quick: bool) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
    import django

    django.setup()
    p = QUICK if quick else FULL
    load_start = os.getloadavg()
    frame, webp = _frame_and_webp()
    detect = detector_part(p, frame)
    push = push_part(p, webp)
    overlay = overlay_part(p)
    load_end = os.getloadavg()

    rows: list[dict[str, Any]] = []
    for label, d in detect.items():
        rows += [
            {"metric": "detect per frame, median", "value": d["median_ms"], "unit": "ms",
             "target": label, "p90_ms": d["p90_ms"]},
            {"metric": "detect frames/s per core", "value": d["frames_per_cpu_s"],
             "unit": "frames/s", "target": label},
        ]  # fmt: skip
    for name, label in (("ws", "WebSocket (binary)"), ("http", "HTTP POST")):
        s = push["summary"][name]
        rows += [
            {"metric": "push round trip, median", "value": s["rtt_median_ms"], "unit": "ms",
             "target": label, "p90_ms": s["rtt_p90_ms"]},
            {"metric": "push frames/s (one in flight)", "value": s["fps"], "unit": "frames/s",
             "target": label},
            {"metric": "server decode+detect, median", "value": s["server_detect_median_ms"],
             "unit": "ms", "target": label},
            {"metric": "transport overhead (rtt - server time)",
             "value": s.get("overhead_median_ms"), "unit": "ms", "target": label},
        ]  # fmt: skip
    for name, label in (("plain", "plain pipeline"), ("overlay", "with face overlay")):
        rows.append(
            {"metric": "live pipeline speed (640x480 30 fps in)",
             "value": overlay[name]["x_real_time"], "unit": "x real time", "target": label}
        )  # fmt: skip
    rows.append(
        {"metric": "overlay detections per second of video",
         "value": overlay["overlay"].get("detections_per_media_s"), "unit": "detections/s",
         "target": "with face overlay", "detect_ms_mean": overlay["overlay"].get("detect_ms_mean")}
    )  # fmt: skip
    full, small = detect["640x480 full size"], detect["320-px resize"]
    ws, http_ = push["summary"]["ws"], push["summary"]["http"]
    ratio = {
        "resize_speedup": round(full["median_ms"] / small["median_ms"], 2),
        "http_rtt_over_ws_rtt": round(http_["rtt_median_ms"] / ws["rtt_median_ms"], 2),
        "ws_fps_over_http_fps": round(ws["fps"] / http_["fps"], 2),
        "ws_rtt_over_in_process_detect": round(ws["rtt_median_ms"] / small["median_ms"], 2),
        "overlay_speed_over_plain": round(
            overlay["overlay"]["x_real_time"] / overlay["plain"]["x_real_time"], 2
        ),
    }
    headline = (
        f"detect {small['median_ms']:.1f} ms/frame at 320 px ({full['median_ms']:.1f} ms full "
        f"640x480), {small['frames_per_cpu_s']:.0f} frames/s per core; push round trip "
        f"WS {ws['rtt_median_ms']:.1f} ms ({ws['fps']:.0f} fps) vs HTTP "
        f"{http_['rtt_median_ms']:.1f} ms ({http_['fps']:.0f} fps); live overlay "
        f"{overlay['overlay']['x_real_time']:.1f}x real time (plain "
        f"{overlay['plain']['x_real_time']:.1f}x); load "
        f"{load_start[0]:.2f}→{load_end[0]:.2f}"
    )
    return {
        "name": NAME,
        "parameters": {
            "detect_frames": p.detect_frames,
            "push_frames_per_round": p.push_frames,
            "rounds": p.rounds,
            "frame": "astronaut fitted into 640x480, WebP quality 80",
            "webp_bytes": len(webp),
            "opencv_threads": 1,
        },
        "rows": rows,
        "ratio": ratio,
        "headline": headline,
        "detector": detect,
        "push": push,
        "overlay": overlay,
        "load_average": {"start": list(load_start), "end": list(load_end)},
    }
