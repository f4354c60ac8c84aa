"""Glass-to-glass latency of a live stream, HLS (hls.js) and DASH (dash.js), in Chromium.

The publisher page publishes "the camera", which an init script replaces by a canvas
(bench/frameclock.js, injected into the page: the site has no test hook) whose frames carry
the wall clock at drawing time as two rows of black/white blocks (24 bits of ms, and their
complement as a check). Each viewer page decodes the block rows of every presented frame
(``requestVideoFrameCallback`` → ``drawImage`` → pixels) and subtracts them from
``Date.now()``: capture → MediaRecorder chunk → upload → FFmpeg → segment → playlist →
player → screen. All pages run in one Chromium on this machine, so they share
one clock. The viewer page's own readout (``data-latency-ms``: server-synced now - capture
clock anchored in the playlist/MPD) is sampled at the same moments, to show it tells the
truth; the players' own estimates are sampled too.

Configurations (one Daphne each, same run): the site's standard settings, and variations
that isolate one choice each (players at their defaults, segment length, MediaRecorder
timeslice, FFmpeg's input probing). A player variation is served to the viewer pages as the
site's static/js/player-tuning.js with assignments to its ``PLAYER_TUNING`` appended (a
Playwright route); a publisher variation fills the publisher form's fields as a user would.
The figures feed docs/decisions.md ("Viewer latency").
"""

from __future__ import annotations

import json
import os
import re
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from bench.support import EMBEDDED_ENV, daphne_site, percentile

NAME = "stream_latency"
TARGET_P50_S = 2.5

BENCH_DIR = Path(__file__).resolve().parent
FRAMECLOCK_JS = BENCH_DIR / "frameclock.js"
PLAYER_TUNING_JS = BENCH_DIR.parent / "static" / "js" / "player-tuning.js"

# name → server env, publisher form fields (id → value), viewer PLAYER_TUNING assignments
# (dotted path → value; static/js/player-tuning.js)
STANDARD: dict[str, Any] = {"env": {}, "publisher": {}, "viewer": {}}
CONFIGS: dict[str, dict[str, Any]] = {
    "standard": STANDARD,
    # the players' own defaults: nothing set, no steering, no MPD refresh of the page's
    "players_default": {
        "env": {},
        "publisher": {},
        "viewer": {"hls": {}, "dash": {}, "hlsTargetS": 0, "mpdRefreshS": 0},
    },
    "segment_1s": {"env": {"STREAM_SEGMENT_SECONDS": "1"}, "publisher": {}, "viewer": {}},
    "sync_1_5": {
        "env": {},
        "publisher": {},
        "viewer": {"hls.liveSyncDuration": 1.5, "dash.streaming.delay.liveDelay": 1.5},
    },
    "gentle_catchup": {
        "env": {},
        "publisher": {},
        "viewer": {"dash.streaming.liveCatchup.playbackRate": {"min": -0.1, "max": 0.1}},
    },
    # dash.js re-reading the MPD on its own (>= 1 s) instead of once per segment
    "mpd_refresh_off": {"env": {}, "publisher": {}, "viewer": {"mpdRefreshS": 0}},
    # once per segment, with dash.js's live delay lowered to what that buys
    "dash_delay_1_5": {
        "env": {},
        "publisher": {},
        "viewer": {"dash.streaming.delay.liveDelay": 1.5},
    },
    # hls.js left to itself (its own catch-up at up to 1.5x), not steered on the capture clock
    "hls_unsteered": {
        "env": {},
        "publisher": {},
        "viewer": {"hlsTargetS": 0, "hls.maxLiveSyncPlaybackRate": 1.5},
    },
    "timeslice_500": {"env": {}, "publisher": {"timeslice": 500}, "viewer": {}},
    "default_probing": {"env": {"STREAM_LOW_LATENCY_INPUT": "0"}, "publisher": {}, "viewer": {}},
}

# The publisher page opens "the camera" (static/js/local-media.js): it gets the clock canvas.
CLOCK_CAMERA_JS = """
navigator.mediaDevices.getUserMedia = async () => window.frameClock.clockStream().stream;
"""


def form_fields_js(fields: dict[str, Any]) -> str:
    """An init script that fills the page's form fields once the document is parsed."""
    values = json.dumps({name: str(value) for name, value in fields.items()})
    return f"""
document.addEventListener("DOMContentLoaded", () => {{
  for (const [id, value] of Object.entries({values})) document.getElementById(id).value = value;
}});
"""


def player_tuning_js(assignments: dict[str, Any]) -> str:
    """static/js/player-tuning.js with ``PLAYER_TUNING.<path> = <value>;`` appended."""
    lines = [f"PLAYER_TUNING.{path} = {json.dumps(value)};" for path, value in assignments.items()]
    return "\n".join([PLAYER_TUNING_JS.read_text(), *lines, ""])


TUNING_READ_JS = """
async (paths) => {
  const { PLAYER_TUNING } = await import('/static/js/player-tuning.js');
  return paths.map((path) => path.split('.').reduce((at, key) => at?.[key], PLAYER_TUNING));
}
"""

MEASURE_JS = """
async () => {
  const { readClock, clockDelay } = window.frameClock;
  const video = document.getElementById('video');
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  window.__g2g = [];
  window.__g2gBad = 0;
  window.__waiting = 0;  // the player ran out of media (a visible stall)
  video.addEventListener('waiting', () => { window.__waiting += 1; });
  window.__rates = [];
  setInterval(() => window.__rates.push(video.playbackRate), 250);
  const root = document.getElementById('viewer');
  const onFrame = () => {
    const now = Date.now();
    if (video.videoWidth && !video.paused) {
      // Scaled back to the publisher's 640x480 canvas, whatever rung is playing.
      canvas.width = 640; canvas.height = 480;
      ctx.drawImage(video, 0, 0, 640, 480);
      const value = readClock(ctx, 640);
      if (value === null) window.__g2gBad += 1;
      else {
        const player = window.rtcViewer.player;
        window.__g2g.push({
          t: now, delay: clockDelay(value, now),
          readout: root.dataset.latencyMs ? Number(root.dataset.latencyMs) : null,
          estimate: player ? player.estimate() : null,
          width: video.videoWidth,
        });
      }
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}
"""

CHROMIUM_EXTRA = [
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_s": round(percentile(values, 50) / 1000, 3),
        "p95_s": round(percentile(values, 95) / 1000, 3),
        "mean_s": round(statistics.fmean(values) / 1000, 3),
    }


class SegmentWatcher:
    """Notes when each segment of the top rung appears on disk (polled every 20 ms).

    With the capture clock this splits the delay: ``on_disk_after_capture`` = the moment a
    segment can be listed minus the capture time of its last frame (MediaRecorder chunking,
    upload, FFmpeg decode/encode/mux); the rest of glass-to-glass is the players' buffer.
    """

    PATTERN = re.compile(r"chunk-stream0-(\d+)\.m4s$")

    def __init__(self, directory: Path):
        self.directory = directory
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> SegmentWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            if not self.directory.is_dir():
                continue
            now = time.time() * 1000
            for path in self.directory.glob("chunk-stream0-*.m4s"):
                match = self.PATTERN.search(path.name)
                if match:
                    self.seen.setdefault(int(match.group(1)), now)

    def lags_ms(self, capture_ms: float) -> list[float]:
        """Per segment: appeared on disk - capture time of its end (the next one's start)."""
        from streaming.clock import media_time_ms

        lags = []
        for number in sorted(self.seen)[:-1]:
            end = media_time_ms(self.directory, 0, number + 1)
            if end is not None and number + 1 in self.seen:
                lags.append(self.seen[number] - (capture_ms + end))
        return lags


def measure(browser, config: dict[str, Any], warmup_s: float, sample_s: float) -> dict[str, Any]:
    from tests.support.ingest import media_dir, start_publishing_in_page, stream_status

    report: dict[str, Any] = {}
    with daphne_site({**EMBEDDED_ENV, **config["env"]}, report=report) as server:
        # One context (a window of its own) per page: in one shared window only the front
        # tab renders, and requestVideoFrameCallback then samples a background viewer at
        # ~1 fps — seen as "8 frames in 8 s" from a viewer playing at 30 fps.
        context = browser.new_context(viewport={"width": 800, "height": 700})
        context.grant_permissions(["camera", "microphone"])
        context.add_init_script(path=str(FRAMECLOCK_JS))
        context.add_init_script(CLOCK_CAMERA_JS)
        if config["publisher"]:
            context.add_init_script(form_fields_js(config["publisher"]))
        contexts = [context]
        watcher: SegmentWatcher | None = None
        try:
            publisher = context.new_page()
            publisher.set_default_timeout(60_000)
            slug = start_publishing_in_page(publisher, server, "Latency", "ws")
            watcher = SegmentWatcher(media_dir(server, slug)).__enter__()
            viewers = {}
            missing = {"hls": [0], "dash": [0]}  # media requests answered 404 while sampling
            sampling = [False]
            for player in ("hls", "dash"):
                viewer_context = browser.new_context(viewport={"width": 800, "height": 700})
                viewer_context.add_init_script(path=str(FRAMECLOCK_JS))
                if config["viewer"]:
                    body = player_tuning_js(config["viewer"])
                    viewer_context.route(
                        "**/static/js/player-tuning.js",
                        lambda route, body=body: route.fulfill(
                            status=200, content_type="text/javascript", body=body
                        ),
                    )
                contexts.append(viewer_context)
                page = viewer_context.new_page()
                page.set_default_timeout(90_000)
                page.on(
                    "response",
                    lambda r, n=missing[player]: (
                        sampling[0]
                        and r.status == 404
                        and "/media/" in r.url
                        and n.__setitem__(0, n[0] + 1)
                    ),
                )
                page.goto(f"{server.url}/streams/{slug}/{player}/")
                paths = list(config["viewer"])
                served = page.evaluate(TUNING_READ_JS, paths)
                assert served == [config["viewer"][p] for p in paths], (served, config["viewer"])
                viewers[player] = page
            for page in viewers.values():
                page.wait_for_function(
                    "document.getElementById('video').currentTime > 1", timeout=90_000
                )
            time.sleep(warmup_s)  # players settle at their live-sync point
            for page in viewers.values():
                page.evaluate(MEASURE_JS)
            sampling[0] = True
            queue_depths = []
            sample_end = time.monotonic() + sample_s
            while time.monotonic() < sample_end:
                queue_depths.append(publisher.evaluate("window.rtcPublisher.queue.length"))
                time.sleep(0.5)
            sampling[0] = False
            watcher.__exit__()
            capture_ms = stream_status(server, slug)["clock"]["capture_ms"]
            out: dict[str, Any] = {
                "segment_on_disk_after_capture": _stats(watcher.lags_ms(capture_ms)),
                "publisher_queue_chunks_max": max(queue_depths, default=None),
            }
            for player, page in viewers.items():
                samples = page.evaluate("window.__g2g")
                bad = page.evaluate("window.__g2gBad")
                stalls = page.evaluate("window.rtcViewer.restarts || 0")
                delays = [s["delay"] for s in samples]
                errors = [s["readout"] - s["delay"] for s in samples if s["readout"] is not None]
                estimates = [s["estimate"] * 1000 for s in samples if s["estimate"]]
                rates = page.evaluate("window.__rates")
                span_s = (samples[-1]["t"] - samples[0]["t"]) / 1000 if len(samples) > 1 else 0
                out[player] = {
                    "glass_to_glass": _stats(delays),
                    "readout_minus_measured_ms": {
                        "n": len(errors),
                        "p50": round(percentile(errors, 50)) if errors else None,
                        "p95_abs": round(percentile([abs(e) for e in errors], 95))
                        if errors
                        else None,
                    },
                    "player_estimate": _stats(estimates),
                    "undecodable_frames": bad,
                    "player_restarts": stalls,
                    "frames_shown_per_s": round(len(samples) / span_s, 1) if span_s else None,
                    "stalls": page.evaluate("window.__waiting"),
                    "media_404s": missing[player][0],
                    "playback_rate_off_1_share": round(
                        sum(1 for r in rates if abs(r - 1) > 1e-3) / len(rates), 2
                    )
                    if rates
                    else None,
                }
            publisher.get_by_test_id("stop").click()
            publisher.wait_for_function(
                "document.getElementById('publisher').dataset.pubState === 'ended'"
            )
        finally:
            if watcher is not None:
                watcher.__exit__()
            for each in contexts:
                each.close()
    out["server_log_errors"] = report.get("log_errors", {})
    return out


def run(quick: bool) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from tests.support.chromium import chromium_args, chromium_path

    names = ["standard", "players_default"] if quick else list(CONFIGS)
    if os.environ.get("STREAM_LATENCY_CONFIGS"):  # e.g. "standard,short_sync"
        names = [n for n in os.environ["STREAM_LATENCY_CONFIGS"].split(",") if n in CONFIGS]
        names = ["standard", *(n for n in names if n != "standard")]  # the headline's row
    warmup_s, sample_s = (5.0, 8.0) if quick else (12.0, 40.0)
    load_start = os.getloadavg()
    results: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=[*chromium_args(), *CHROMIUM_EXTRA],
        )
        try:
            for name in names:
                results[name] = measure(browser, CONFIGS[name], warmup_s, sample_s)
                print(
                    f"  {name}: hls {results[name]['hls']['glass_to_glass']}, "
                    f"dash {results[name]['dash']['glass_to_glass']}, segment on disk "
                    f"{results[name]['segment_on_disk_after_capture']}",
                    flush=True,
                )
        finally:
            browser.close()
    load_end = os.getloadavg()

    rows = []
    for name, result in results.items():
        for player in ("hls", "dash"):
            g2g = result[player]["glass_to_glass"]
            rows.append(
                {
                    "metric": f"{name} {player} glass-to-glass p50",
                    "value": g2g.get("p50_s"),
                    "unit": "s",
                    "p95_s": g2g.get("p95_s"),
                    "frames": g2g.get("n"),
                    "readout_error_p50_ms": result[player]["readout_minus_measured_ms"]["p50"],
                    "player_estimate_p50_s": result[player]["player_estimate"].get("p50_s"),
                    "segment_on_disk_p50_s": result["segment_on_disk_after_capture"].get("p50_s"),
                }
            )
    std = results["standard"]
    hls_p50 = std["hls"]["glass_to_glass"].get("p50_s")
    dash_p50 = std["dash"]["glass_to_glass"].get("p50_s")
    met = all(v is not None and v <= TARGET_P50_S for v in (hls_p50, dash_p50))
    headline = (
        f"glass-to-glass (standard): hls.js p50 {hls_p50} s / p95 "
        f"{std['hls']['glass_to_glass'].get('p95_s')} s, dash.js p50 {dash_p50} s / p95 "
        f"{std['dash']['glass_to_glass'].get('p95_s')} s "
        f"({'meets' if met else 'misses'} the {TARGET_P50_S} s p50 target); load "
        f"{load_start[0]:.1f}->{load_end[0]:.1f} on a shared 2-core machine"
    )
    return {
        "name": NAME,
        "rows": rows,
        "headline": headline,
        "ratio": None,
        "parameters": {
            "configs": {n: CONFIGS[n] for n in names},
            "warmup_s": warmup_s,
            "sample_s": sample_s,
            "transport": "ws",
            "source": "640x480 canvas at 30 fps with a 24-bit ms clock, silent audio",
            "target_p50_s": TARGET_P50_S,
        },
        "results": results,
        "loadavg": {"start": list(load_start), "end": list(load_end)},
    }
