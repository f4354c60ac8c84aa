"""WHIP ingest and WHEP playback (issue 17): glass to glass, and the server's cost per viewer.

**Glass to glass** (``latency``): the clock canvas of ``bench/frameclock.js`` published by a
browser over WHIP (``POST /streams/<slug>/whip/`` with the publish key, an
``RTCPeerConnection`` in a bench page of the site's origin: no app code on the measured
path) and read back from every presented frame in a browser WHEP viewer (the same, against
``/streams/<slug>/whep/``) and in the site's hls.js and dash.js pages, standard and low
latency; in the same run the chunk-ingest (WebSocket, the publisher page) streams of
``bench_stream_latency`` with a WHEP viewer added. One Chromium, one clock.

**Cost per WHEP viewer** (``cost``): one live 480p stream (HTTP chunk ingest of a
640x480 30 fps VP8 + Opus clip at 1x), and 0, 1, 10, 50 aiortc WHEP viewers in a process
of their own (``bench.whep_viewers``: they count frames instead of decoding them). Per step
the server's CPU (Daphne and its FFmpeg, ``/proc``) over a window, and each viewer's frame
rate. Same run, same viewers: a bare aiortc server (``bench.whep_viewers.peer_main``) fed
one H.264 + Opus clip, handing every viewer the encoded packets (the floor: aiortc's own
packetise + encrypt) or giving every viewer its own aiortc encoder (the per-viewer-encode
baseline the issue compares against).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.support import EMBEDDED_ENV, REPO, daphne_site, peer_process

NAME = "whep"
G2G_TARGET_P50_S = 0.4
CORE_PER_VIEWER_TARGET = 0.02
SOURCE_FPS = 30
CACHE = Path(tempfile.gettempdir()) / "rtcsite-bench-whep"

#: which parts run (``WHEP_BENCH_PARTS=latency,cost``)
PARTS = ("latency", "cost")
#: viewer steps: the site and the packet peer; the per-viewer-encode baseline saturates early
VIEWERS = {False: [0, 1, 10, 50], True: [0, 1, 3]}
BASELINE_VIEWERS = {False: [0, 1, 2, 4, 10], True: [0, 1, 2]}
#: the stream_latency configurations run here: chunk ingest and WHIP, standard and LL
LATENCY_CONFIGS = {
    False: ["standard", "low_latency", "whip", "whip_webrtc", "whip_low_latency"],
    True: ["whip"],
}


# --- pure parts (tests/unit/test_bench_whep.py) -------------------------------------------------


def int_list(text: str | None, default: list[int]) -> list[int]:
    """``"0,1,10"`` → ``[0, 1, 10]`` (an env override), else ``default``."""
    if not text:
        return list(default)
    values = [int(part) for part in text.split(",") if part.strip()]
    if values != sorted(set(values)) or any(v < 0 for v in values):
        raise ValueError(f"viewer steps must be increasing and >= 0: {text!r}")
    return values


def parts(text: str | None) -> list[str]:
    chosen = [p.strip() for p in (text or ",".join(PARTS)).split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        raise ValueError(f"WHEP_BENCH_PARTS: unknown {unknown}; known: {', '.join(PARTS)}")
    return chosen


def step_cores(step: dict[str, Any]) -> float:
    """The serving process's own cores in a step (Daphne, or the bare peer): the encoders
    (FFmpeg children) are per stream, not per viewer, and reported apart."""
    return float(step["server_pid_cores"])


def per_viewer_cost(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Cores per extra viewer: between consecutive steps, and from the first step with a
    viewer to the last one where every viewer kept the full rate (the slope the target is
    about; a saturated step only shows where the machine ran out, ``saturated_from``).
    Steps where a viewer failed to connect or never got a picture are left out
    (``invalid_steps``): their CPU is not that of the viewers they were meant to have."""
    invalid = [
        s["viewers"]
        for s in steps
        if s["viewers"] > 0 and (s.get("error_count") or s.get("without_picture"))
    ]
    steps = [s for s in steps if s["viewers"] not in invalid]
    with_viewers = [s for s in steps if s["viewers"] > 0]
    pairwise = []
    for a, b in itertools.pairwise(steps):
        if b["viewers"] > a["viewers"]:
            pairwise.append(
                {
                    "from": a["viewers"],
                    "to": b["viewers"],
                    "cores_per_viewer": round(
                        (step_cores(b) - step_cores(a)) / (b["viewers"] - a["viewers"]), 4
                    ),
                }
            )
    saturated = [s["viewers"] for s in with_viewers if s["full_rate_viewers"] < s["viewers"]]
    # A saturated step's CPU is capped by the machine, not set by its viewers: the slope
    # ends at the last step where every viewer kept the full rate, when there is one.
    full = [s for s in with_viewers if s["viewers"] not in saturated]
    overall = None
    if len(full) >= 2 or (len(with_viewers) >= 2 and not full):
        first, last = (full[0], full[-1]) if full else (with_viewers[0], with_viewers[-1])
        overall = round(
            (step_cores(last) - step_cores(first)) / (last["viewers"] - first["viewers"]), 4
        )
    elif with_viewers and steps[0]["viewers"] == 0:
        first = (full or with_viewers)[0]
        overall = round((step_cores(first) - step_cores(steps[0])) / first["viewers"], 4)
    return {
        "cores_per_extra_viewer": overall,
        "steps": pairwise,
        "saturated_from": saturated[0] if saturated else None,
        "invalid_steps": invalid,
    }


def full_rate_capacity(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The most viewers measured with every one at full frame rate (and a picture), and the
    first step where some fell short."""
    ok = [
        s["viewers"]
        for s in steps
        if s["viewers"] > 0
        and s["full_rate_viewers"] == s["viewers"]
        and not s.get("without_picture")
        and not s.get("error_count")
    ]
    short = [s for s in steps if s["viewers"] > 0 and s["viewers"] not in ok]
    return {
        "all_full_rate_up_to": max(ok) if ok else 0,
        "first_short_step": short[0]["viewers"] if short else None,
        "full_rate_at_first_short": short[0]["full_rate_viewers"] if short else None,
    }


def projected_viewers(steps: list[dict[str, Any]], slope: float | None) -> int | None:
    """Viewers one serving process could take before it uses a whole core (one event loop,
    one GIL: that is its limit), from its cores at the first viewer step and the slope."""
    with_viewers = [s for s in steps if s["viewers"] > 0]
    if not with_viewers or not slope or slope <= 0:
        return None
    first = with_viewers[0]
    return int(first["viewers"] + max(0.0, 1.0 - step_cores(first)) / slope)


def cost_rows(target: str, label: str, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for step in steps:
        rows.append(
            {
                "metric": f"cost {target}: {step['viewers']} viewers, {label} cores",
                "value": step_cores(step),
                "unit": "cores",
                "encoder_cores": round(
                    sum(v for k, v in step["server_cores"].items() if k.startswith("ffmpeg")), 3
                )
                or None,
                "full_rate": f"{step['full_rate_viewers']}/{step['viewers']}",
                "fps_min": step.get("video_fps_min"),
                "fps_median": step.get("video_fps_median"),
                "arrival_spread_p95_ms": step.get("arrival_spread_p95_ms_median"),
                "client_cores": step.get("client_cores"),
                "load": step["loadavg"][0],
            }
        )
    cost = per_viewer_cost(steps)
    rows.append(
        {
            "metric": f"cost {target}: cores per extra viewer",
            "value": cost["cores_per_extra_viewer"],
            "unit": "cores",
            "target": f"<= {CORE_PER_VIEWER_TARGET}" if target == "ours" else None,
            "saturated_from": cost["saturated_from"],
        }
    )
    return rows


def cost_headline(cost: dict[str, Any]) -> str:
    parts_ = []
    ours = cost.get("ours")
    if ours and "steps" in ours:
        slope = ours["per_viewer"]["cores_per_extra_viewer"]
        met = slope is not None and slope <= CORE_PER_VIEWER_TARGET
        parts_.append(
            f"WHEP {slope} cores per extra viewer ({'meets' if met else 'misses'} the "
            f"{CORE_PER_VIEWER_TARGET} target), all at full frame rate up to "
            f"{ours['capacity']['all_full_rate_up_to']} viewers, one process ~"
            f"{ours['projected_viewers']} viewers"
        )
    for target, name in (
        ("packets", "bare aiortc packet fan-out"),
        ("encode", "per-viewer encode"),
    ):
        got = cost.get(target)
        if got and "steps" in got:
            parts_.append(
                f"{name} {got['per_viewer']['cores_per_extra_viewer']} cores/viewer "
                f"(full rate up to {got['capacity']['all_full_rate_up_to']})"
            )
    return "; ".join(parts_)


# --- cost -----------------------------------------------------------------------------------


def run_viewers(
    url: str, server_pid: int, steps: list[int], warmup_s: float, sample_s: float, stop: bool
) -> dict[str, Any]:
    """``bench.whep_viewers`` in a process of its own; its JSON document."""
    command = [
        sys.executable, "-m", "bench.whep_viewers", "--url", url,
        "--server-pid", str(server_pid), "--scales", ",".join(map(str, steps)),
        "--warmup", str(warmup_s), "--sample", str(sample_s), "--source-fps", str(SOURCE_FPS),
    ] + (["--stop-when-saturated"] if stop else [])  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"viewers failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class ChunkPusher:
    """Publishes a clip over HTTP chunk ingest at its media pace, in a thread."""

    def __init__(self, server: Any, slug: str, key: str, chunks: list[Any]) -> None:
        self.server, self.slug, self.key, self.chunks = server, slug, key, chunks
        self.errors: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ChunkPusher:
        self._thread.start()
        return self

    def _run(self) -> None:
        from tests.support.ingest import post_chunk

        t0 = time.monotonic()
        for seq, chunk in enumerate(self.chunks):
            if self._stop.wait(max(0.0, t0 + chunk.end_ms / 1000 - time.monotonic())):
                return
            fields = {"capture_ms": str(int(time.time() * 1000))} if seq == 0 else {}
            status, body = post_chunk(self.server, self.slug, self.key, seq, chunk.data, **fields)
            if status >= 300:
                self.errors.append(f"{seq}: {status} {body}")
                if len(self.errors) > 5:
                    return
            self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def wait_live(server: Any, slug: str, limit_s: float = 60.0) -> dict[str, Any]:
    from tests.support.ingest import stream_status

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status = stream_status(server, slug)
        if status.get("status") == "live" and status.get("segments"):
            return status
        time.sleep(0.25)
    raise RuntimeError(f"stream {slug} not live with segments after {limit_s} s: {status}")


def whep_env(max_viewers: int) -> dict[str, str]:
    """The site's WHEP on, its per-process and per-address caps above the bench's viewers
    (every viewer here is 127.0.0.1)."""
    return {
        "STREAM_WHEP": "1",
        "STREAM_WHEP_MAX_VIEWERS": str(max_viewers + 10),
        "STREAM_WHEP_MAX_VIEWERS_PER_ADDRESS": str(max_viewers + 10),
    }


def measure_ours(steps: list[int], warmup_s: float, sample_s: float, clip_s: int) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
    import django

    django.setup()  # the test clip's FFmpeg binary is the settings'

    from tests.support.ingest import new_stream, stop_http
    from tests.support.media import cached_webm, mediarecorder_chunks

    CACHE.mkdir(exist_ok=True)
    chunks = mediarecorder_chunks(
        cached_webm(CACHE, seconds=clip_s, size="640x480", fps=SOURCE_FPS), timeslice_ms=250
    )
    report: dict[str, Any] = {}
    with daphne_site({**EMBEDDED_ENV, **whep_env(max(steps))}, report=report) as server:
        slug, key = new_stream(server, "WHEP cost", low_latency=False)
        pusher = ChunkPusher(server, slug, key, chunks).start()
        try:
            wait_live(server, slug)
            out = run_viewers(
                f"{server.url}/streams/{slug}/whep/", server.pid, steps, warmup_s, sample_s, False
            )
        finally:
            pusher.stop()
            stop_http(server, slug, key)
        out["publisher"] = {"chunks_sent": pusher.sent, "errors": pusher.errors[:5]}
    out["server_log_errors"] = report.get("log_errors", {})
    return out


def measure_peer(mode: str, steps: list[int], warmup_s: float, sample_s: float, clip: Path):
    os.environ["WHEP_BENCH_CLIP"] = str(clip)
    os.environ["WHEP_BENCH_MODE"] = mode
    with peer_process("bench.whep_viewers:peer_main") as peer:
        out = run_viewers(
            f"http://127.0.0.1:{peer.port}/{mode}",
            peer.pid,
            steps,
            warmup_s,
            sample_s,
            stop=(mode == "encode"),
        )
        out["peer_log_tail"] = peer.log()[-1500:]
    return out


def measure_cost(quick: bool) -> dict[str, Any]:
    import imageio_ffmpeg

    from bench.whep_viewers import make_clip

    steps = int_list(os.environ.get("WHEP_VIEWERS"), VIEWERS[quick])
    baseline = int_list(os.environ.get("WHEP_BASELINE_VIEWERS"), BASELINE_VIEWERS[quick])
    warmup_s, sample_s = (2.0, 4.0) if quick else (5.0, 10.0)
    CACHE.mkdir(exist_ok=True)
    clip = make_clip(CACHE / "clip-300.ts", 300, imageio_ffmpeg.get_ffmpeg_exe())
    results: dict[str, Any] = {}
    plan = [
        ("ours", lambda: measure_ours(steps, warmup_s, sample_s, 60 if quick else 240)),
        ("packets", lambda: measure_peer("packets", steps, warmup_s, sample_s, clip)),
        ("encode", lambda: measure_peer("encode", baseline, warmup_s, sample_s, clip)),
    ]
    for target, measure in plan:
        try:
            got = measure()
        except Exception as exc:  # one target failing keeps the others' figures
            results[target] = {"error": f"{type(exc).__name__}: {exc}"[-3000:]}
            print(f"  cost {target}: FAILED {results[target]['error'][:500]}", flush=True)
            continue
        results[target] = summarise_cost(got)
        print(f"  cost {target}: {got['per_viewer']} {got['capacity']}", flush=True)
    return results


# --- glass to glass -------------------------------------------------------------------------


def measure_latency(quick: bool) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from bench import bench_stream_latency as latency
    from tests.support.chromium import chromium_args, chromium_path

    names = LATENCY_CONFIGS[quick]
    if os.environ.get("WHEP_LATENCY_CONFIGS"):
        names = [n.strip() for n in os.environ["WHEP_LATENCY_CONFIGS"].split(",") if n.strip()]
    warmup_s, sample_s = (5.0, 8.0) if quick else (10.0, 25.0)
    results: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=[*chromium_args(), *latency.CHROMIUM_EXTRA],
        )
        try:
            for name in names:
                config = dict(latency.CONFIGS[name])
                config.setdefault("players", ("hls", "dash", "whep"))
                config["env"] = {**config["env"], **whep_env(10)}
                try:
                    results[name] = latency.measure(browser, config, warmup_s, sample_s)
                except Exception as exc:
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"[-3000:]}
                print(f"  latency {name}: {summary_line(results[name])}", flush=True)
        finally:
            browser.close()
    return results


def summary_line(result: dict[str, Any]) -> str:
    if "error" in result:
        return "FAILED " + result["error"][:400]
    return ", ".join(
        f"{p} {result[p]['glass_to_glass'].get('p50_s')} s"
        if "glass_to_glass" in result[p]
        else f"{p} failed: {result[p].get('error', '')[:200]}"
        for p in ("whep", "whep_video", "webrtc", "hls", "dash")
        if p in result
    )


def latency_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    from bench import bench_stream_latency as latency

    rows = []
    for name, result in results.items():
        if "error" in result:
            rows.append(
                {
                    "metric": f"{name}: failed",
                    "value": None,
                    "unit": "",
                    "error": result["error"][:300],
                }
            )
            continue
        for player in ("whep", "whep_video", "webrtc", "hls", "dash"):
            if "error" in result.get(player, {}):
                rows.append(
                    {
                        "metric": f"{name} {player}: failed",
                        "value": None,
                        "unit": "",
                        "error": result[player]["error"][:300],
                    }
                )
            elif player in result:
                row = latency.player_row(name, player, result)
                if player in ("whep", "whep_video", "webrtc"):
                    row["target"] = f"<= {G2G_TARGET_P50_S} s p50"
                rows.append(row)
    return rows


def latency_headline(results: dict[str, Any]) -> str:
    whip = results.get("whip", {})
    if "glass_to_glass" not in whip.get("whep", {}):  # only the side-by-side ran
        whip = results.get("whip_webrtc", {})
    if "glass_to_glass" not in whip.get("whep", {}):
        return "glass to glass: no WHIP → WHEP figure"
    p50 = whip["whep"]["glass_to_glass"].get("p50_s")
    met = p50 is not None and p50 <= G2G_TARGET_P50_S
    text = (
        f"browser WHIP → WHEP glass to glass p50 {p50} s / p95 "
        f"{whip['whep']['glass_to_glass'].get('p95_s')} s ({'meets' if met else 'misses'} the "
        f"{G2G_TARGET_P50_S} s target)"
    )
    side = results.get("whip_webrtc", whip)
    video = side.get("whep_video", {})
    if "glass_to_glass" in video:
        text += (
            f"; side by side: audio+video {side['whep']['glass_to_glass'].get('p50_s')} s, "
            f"video only (no lip sync) {video['glass_to_glass'].get('p50_s')} s"
        )
    page = side.get("webrtc", {})
    if "glass_to_glass" in page:
        text += (
            f"; the site's WebRTC viewer page p50 {page['glass_to_glass'].get('p50_s')} s, its "
            f"readout off by {page['readout_minus_measured_ms'].get('p50')} ms (p50)"
        )
    for name in ("whip", "whip_low_latency", "standard", "low_latency"):
        got = results.get(name, {})
        if "glass_to_glass" in got.get("hls", {}) and "glass_to_glass" in got.get("dash", {}):
            text += (
                f"; {name} hls.js {got['hls']['glass_to_glass'].get('p50_s')} s, dash.js "
                f"{got['dash']['glass_to_glass'].get('p50_s')} s"
            )
    return text


# --- the benchmark --------------------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    chosen = parts(os.environ.get("WHEP_BENCH_PARTS"))
    load_start = list(os.getloadavg())
    latency = measure_latency(quick) if "latency" in chosen else {}
    cost = measure_cost(quick) if "cost" in chosen else {}
    return assemble(chosen, latency, cost, load_start, list(os.getloadavg()))


def summarise_cost(got: dict[str, Any]) -> dict[str, Any]:
    """A target's steps → its cost per viewer, full-rate capacity and projection."""
    got["per_viewer"] = per_viewer_cost(got["steps"])
    got["capacity"] = full_rate_capacity(got["steps"])
    got["projected_viewers"] = projected_viewers(
        got["steps"], got["per_viewer"]["cores_per_extra_viewer"]
    )
    return got


def assemble(
    chosen: list[str],
    latency: dict[str, Any],
    cost: dict[str, Any],
    load_start: list[float],
    load_end: list[float],
) -> dict[str, Any]:
    """The result from the measured parts (pure: also re-summarises a saved run)."""
    rows: list[dict[str, Any]] = []
    headline = []
    if latency:
        rows += latency_rows(latency)
        headline.append(latency_headline(latency))
    if cost:
        for target in cost.values():
            if "steps" in target:
                summarise_cost(target)
        for target, label in (
            ("ours", "Daphne"),
            ("packets", "bare peer"),
            ("encode", "bare peer"),
        ):
            got = cost.get(target, {})
            if "steps" in got:
                rows += cost_rows(target, label, got["steps"])
            else:
                rows.append(
                    {
                        "metric": f"cost {target}: failed",
                        "value": None,
                        "unit": "",
                        "error": got.get("error", "")[:300],
                    }
                )
        headline.append(cost_headline(cost))
    ours = cost.get("ours", {}).get("per_viewer", {}).get("cores_per_extra_viewer")
    encode = cost.get("encode", {}).get("per_viewer", {}).get("cores_per_extra_viewer")
    return {
        "name": NAME,
        "rows": rows,
        "ratio": round(encode / ours, 1) if ours and encode else None,
        "headline": "; ".join(h for h in headline if h)
        + f"; load {load_start[0]:.1f}->{load_end[0]:.1f} on a shared 2-core machine",
        "parameters": {
            "parts": chosen,
            "g2g_target_p50_s": G2G_TARGET_P50_S,
            "core_per_viewer_target": CORE_PER_VIEWER_TARGET,
            "source_fps": SOURCE_FPS,
            "ratio": "per-viewer-encode cores per extra viewer / WHEP cores per extra viewer",
            "full_rate": ">= 29/30 of the source's frame rate over the sample window",
        },
        "latency": latency,
        "cost": cost,
        "loadavg": {"start": load_start, "end": load_end},
    }
