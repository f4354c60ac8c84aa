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

Low-latency configurations (issue 16) create the stream with the create form's "low
latency" checkbox (``low_latency``) ticked, where every other configuration leaves it
unticked (and starts the server with ``STREAM_LOW_LATENCY_DEFAULT=0``), and open the
viewers with ``?latency=low``. They add the delay per stage: in the publisher page (an init
script around ``MediaRecorder`` and ``WebSocket``) each chunk's ready → sent → acked; on the
server's disk each fragment of the top rung complete in its growing ``.m4s.tmp``
(``bench.http_viewers.FileWatch``, inotify), mapped to the capture time of its last frame
by its ``tfdt`` + duration and the stream's capture clock; a blocking-reload client on the
top rung's LL playlist notes when each part is first listed and when its byte range
arrives; the players' glass-to-glass is the last stage.
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
LL_TARGET_P50_S = 1.0  # issue 16: low-latency mode, both players, and 0 stalls

BENCH_DIR = Path(__file__).resolve().parent
FRAMECLOCK_JS = BENCH_DIR / "frameclock.js"
PLAYER_TUNING_JS = BENCH_DIR.parent / "static" / "js" / "player-tuning.js"

# name → server env, publisher form fields (id → value), viewer PLAYER_TUNING assignments
# (dotted path → value; static/js/player-tuning.js); optional "low_latency" (the create
# form's checkbox, default unticked) and "latency" (the viewer URL's ?latency=).
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
    # issue 16: a low-latency stream (LL-HLS parts, LL-DASH chunks) in the players' LL mode
    "low_latency": {
        "env": {},
        "publisher": {},
        "viewer": {},
        "low_latency": True,
        "latency": "low",
    },
    # the same, published over HTTP chunk ingest (a POST per 100 ms chunk) instead of the
    # WebSocket a low-latency stream's publisher page starts on
    "low_latency_http": {
        "env": {},
        "publisher": {},
        "viewer": {},
        "low_latency": True,
        "latency": "low",
        "ingest": "http",
    },
    # the same stream in the players' standard mode (what a viewer who picks it gets)
    "low_latency_standard_players": {
        "env": {},
        "publisher": {},
        "viewer": {},
        "low_latency": True,
        "latency": "standard",
    },
    # issue 17: the browser publishes over WHIP (bench page, no app code), viewers over
    # hls.js, dash.js and WHEP
    # ("whep" is the bench's own WHEP page; "webrtc" the site's viewer page, whep.js, whose
    # latency readout is then checked against the clock like the players')
    "whip": {
        "env": {"STREAM_WHEP": "1"},
        "publisher": {},
        "viewer": {},
        "ingest": "whip",
        "players": ("hls", "dash", "whep"),
    },
    # the WebRTC viewers side by side, no HLS/DASH players loading the machine: the bench's
    # WHEP page with audio+video and with video only (no lip sync), and the site's page
    "whip_webrtc": {
        "env": {"STREAM_WHEP": "1"},
        "publisher": {},
        "viewer": {},
        "ingest": "whip",
        "players": ("whep", "whep_video", "webrtc"),
    },
    "whip_low_latency": {
        "env": {"STREAM_WHEP": "1"},
        "publisher": {},
        "viewer": {},
        "low_latency": True,
        "latency": "low",
        "ingest": "whip",
        "players": ("hls", "dash", "whep"),
    },
}
#: ``STREAM_LATENCY_CONFIGS`` may name a group: ``ll`` = every low-latency configuration of
#: chunk ingest, ``whip`` = the WHIP-published ones (issue 17).
GROUPS = {
    "ll": [
        name
        for name, config in CONFIGS.items()
        if config.get("low_latency") and config.get("ingest", "ws") in ("ws", "http")
    ],
    "whip": [name for name, config in CONFIGS.items() if config.get("ingest") == "whip"],
}
QUICK = ["standard", "players_default", "low_latency"]


def select_configs(selection: str | None, quick: bool) -> list[str]:
    """The configurations to run: ``STREAM_LATENCY_CONFIGS`` (names or groups, comma
    separated; ``standard`` always first: the headline's row), else all (``--quick``: a
    few). An unknown name is an error, not a silently shorter run."""
    if not selection:
        return list(QUICK if quick else CONFIGS)
    names: list[str] = []
    for item in (part.strip() for part in selection.split(",")):
        if not item:
            continue
        if item not in CONFIGS and item not in GROUPS:
            known = ", ".join([*CONFIGS, *GROUPS])
            raise ValueError(f"STREAM_LATENCY_CONFIGS: unknown {item!r}; known: {known}")
        names += GROUPS.get(item, [item])
    return list(dict.fromkeys(["standard", *names]))


# The publisher page opens "the camera" (static/js/local-media.js): it gets the clock canvas.
CLOCK_CAMERA_JS = """
navigator.mediaDevices.getUserMedia = async () => {
  window.__clockSource = window.frameClock.clockStream();
  return window.__clockSource.stream;
};
"""


def low_latency_box_js(checked: bool) -> str:
    """An init script that sets the create form's "low latency" checkbox (if the page has
    one) as a user would; whether the stream got the mode is checked on its status JSON."""
    return f"""
document.addEventListener("DOMContentLoaded", () => {{
  const box = document.querySelector('input[name="low_latency"]');
  if (box) box.checked = {"true" if checked else "false"};
}});
"""


# The publisher page's ingest, timed where it happens (the app code is untouched): each
# MediaRecorder chunk (seq = its index, as publisher.js numbers them) when it is ready, when
# its binary WebSocket frame (4-byte seq + bytes) is sent, when its ``ack`` arrives (the
# server has queued it for FFmpeg: the pipeline's writer feeds FFmpeg from that queue).
INGEST_TRACE_JS = """
(() => {
  const trace = (window.__ingestTrace = { ready: [], sent: {}, acked: {} });
  const Recorder = window.MediaRecorder;
  if (Recorder) {
    window.MediaRecorder = class extends Recorder {
      constructor(...args) {
        super(...args);
        this.addEventListener("dataavailable", (event) => {
          if (event.data && event.data.size) trace.ready.push(Date.now());
        });
      }
    };
  }
  const Socket = window.WebSocket;
  window.WebSocket = class extends Socket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        if (typeof event.data !== "string") return;
        try {
          const msg = JSON.parse(event.data);
          if (msg.type === "ack" && Number.isInteger(msg.seq)) trace.acked[msg.seq] ??= Date.now();
        } catch (error) { /* not JSON: not an ack */ }
      });
    }
    send(data) {
      if (data instanceof Uint8Array && data.byteLength >= 4) {
        const seq = new DataView(data.buffer, data.byteOffset, 4).getUint32(0);
        trace.sent[seq] ??= Date.now();
      }
      return super.send(data);
    }
  };
  // HTTP chunk ingest: one POST per chunk (FormData with seq and chunk); acked = answered
  const realFetch = window.fetch;
  window.fetch = function (input, init) {
    const body = init && init.body;
    const seq = body instanceof FormData && body.has("chunk") ? Number(body.get("seq")) : NaN;
    if (!Number.isInteger(seq)) return realFetch.apply(this, arguments);
    trace.sent[seq] ??= Date.now();
    return realFetch.apply(this, arguments).then((response) => {
      trace.acked[seq] ??= Date.now();
      return response;
    });
  };
})();
"""


def chunk_stages(trace: dict[str, Any], start_ms: float, end_ms: float) -> dict[str, Any]:
    """Per chunk sent within [start, end]: ready → sent and sent → acked (ms), and the
    chunks' real spacing (a frame waits on average half of it for its chunk to close)."""
    from bench.http_viewers import summary

    ready = trace["ready"]
    sent = {int(seq): at for seq, at in trace["sent"].items()}  # JSON object keys: strings
    acked = {int(seq): at for seq, at in trace["acked"].items()}
    to_sent, to_acked, spans = [], [], []
    for seq, at in sent.items():
        if not start_ms <= at <= end_ms or seq >= len(ready):
            continue
        to_sent.append(at - ready[seq])
        if seq in acked:
            to_acked.append(acked[seq] - at)
        if seq > 0:
            spans.append(ready[seq] - ready[seq - 1])
    return {
        "chunk_span": summary(spans),
        "chunk_ready_to_sent": summary(to_sent),
        "chunk_sent_to_acked": summary(to_acked),
    }


def part_stages(
    units: dict[Any, Any],
    listed: dict[Any, float],
    served: dict[Any, float],
    capture_end: Any,
    start_ms: float,
    end_ms: float,
) -> dict[str, Any]:
    """For each part listed within [start, end]: capture of its last frame → fragment
    complete on disk → part listed → part's bytes served (cumulative, ms), and the steps."""
    from bench.http_viewers import summary

    stages: dict[str, list[float]] = {
        "capture_to_fragment_written": [],
        "capture_to_part_listed": [],
        "capture_to_part_served": [],
        "written_to_listed": [],
        "listed_to_served": [],
    }
    for key, at in listed.items():
        if not start_ms <= at <= end_ms or key[1] is None:
            continue
        end = capture_end(key)
        unit = units.get(key)
        if end is None or unit is None:
            continue
        stages["capture_to_fragment_written"].append(unit.written_ms - end)
        stages["capture_to_part_listed"].append(at - end)
        stages["written_to_listed"].append(at - unit.written_ms)
        if key in served:
            stages["capture_to_part_served"].append(served[key] - end)
            stages["listed_to_served"].append(served[key] - at)
    return {name: summary(values) for name, values in stages.items()}


def form_fields_js(fields: dict[str, Any]) -> str:
    """An init script that fills the page's form fields once the document is parsed."""
    values = json.dumps({name: str(value) for name, value in fields.items()})
    return f"""
document.addEventListener("DOMContentLoaded", () => {{
  for (const [id, value] of Object.entries({values})) document.getElementById(id).value = value;
}});
"""


def _serve_js(body: str):
    """A route handler answering ``body`` (one parameter: Playwright passes the request too
    to a handler that takes two, as a default-argument closure would)."""

    def handler(route) -> None:
        route.fulfill(status=200, content_type="text/javascript", body=body)

    return handler


def _serve_html(body: str):
    def handler(route) -> None:
        route.fulfill(status=200, content_type="text/html", body=body)

    return handler


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

# A page of the site's origin (answered by a Playwright route, so same-origin fetches need
# no CORS and no app script runs): a video element where MEASURE_JS expects one.
BENCH_PAGE_PATH = "/bench-page/"
BENCH_PAGE_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>bench</title></head>
<body><div id="viewer"><video id="video" autoplay muted playsinline width="640" height="480">
</video></div><script>window.rtcViewer = { player: null, restarts: 0 };</script></body></html>"""

# Shared by the WHIP publisher and the WHEP viewer: non-trickle offer/answer over HTTP as
# RFC 9725 / draft-ietf-wish-whep have it (201 + answer + Location).
WEBRTC_HTTP_JS = """
window.benchWebRtc = async (pc, url, headers) => {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
    setTimeout(resolve, 3000);
  });
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", ...headers },
    body: pc.localDescription.sdp,
  });
  const body = await response.text();
  if (response.status !== 201) throw new Error(`POST ${url}: ${response.status} ${body}`);
  await pc.setRemoteDescription({ type: "answer", sdp: body });
  return new URL(response.headers.get("Location"), location.href).href;
};
"""

WHIP_PUBLISH_JS = """
async ({ url, key }) => {
  const source = (window.__clockSource = window.frameClock.clockStream());
  const pc = (window.__whipPc = new RTCPeerConnection());
  for (const track of source.stream.getTracks()) {
    pc.addTransceiver(track, { direction: "sendonly" });
  }
  window.__whipResource = await window.benchWebRtc(pc, url, { Authorization: `Bearer ${key}` });
  window.__whipStop = () => fetch(window.__whipResource, {
    method: "DELETE", headers: { Authorization: `Bearer ${key}` },
  }).then((r) => r.status);
}
"""

WHEP_PLAY_JS = """
async ({ url, audio }) => {
  const pc = (window.__whepPc = new RTCPeerConnection());
  pc.addTransceiver("video", { direction: "recvonly" });
  if (audio) pc.addTransceiver("audio", { direction: "recvonly" });
  const video = document.getElementById("video");
  const stream = new MediaStream();
  pc.addEventListener("track", (event) => {
    stream.addTrack(event.track);
    if (video.srcObject !== stream) video.srcObject = stream;  // set once: a reset aborts play()
  });
  window.__whepResource = await window.benchWebRtc(pc, url, {});
}
"""

# Where a WebRTC viewer's delay sits in the browser: the receiver's jitter buffer per frame.
WEBRTC_RECEIVER_JS = """
async () => {
  const stats = await window.__whepPc.getStats();
  let audio = null;
  for (const report of stats.values()) {
    const count = report.jitterBufferEmittedCount;
    if (report.type === "inbound-rtp" && report.kind === "audio" && count) {
      audio = (1000 * report.jitterBufferDelay) / count;
    }
  }
  for (const report of stats.values()) {
    if (report.type === "inbound-rtp" && report.kind === "video") {
      return {
        audio_jitter_buffer_ms: audio,
        jitter_buffer_ms: report.jitterBufferEmittedCount
          ? (1000 * report.jitterBufferDelay) / report.jitterBufferEmittedCount : null,
        frames_decoded: report.framesDecoded, frames_dropped: report.framesDropped,
        width: report.frameWidth, height: report.frameHeight, fps: report.framesPerSecond,
        codec_id: report.codecId, freezes: report.freezeCount,
      };
    }
  }
  return null;
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


class PartProbe:
    """A low-latency stream's top rung, watched from this process on an event loop of its
    own (a thread: the browser side is Playwright's sync API): ``FileWatch`` on the
    stream's folder and one LL-HLS viewer (``bench.http_viewers.ll_rendition``) doing
    blocking reloads on the top rung's media playlist and fetching each new part's byte
    range. ``error`` holds why the viewer stopped early (e.g. no LL playlist served)."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder = port, folder
        self.playlist = ""
        self.error: str | None = None
        self.watch = None
        self.stats = None
        self._loop = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> PartProbe:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.ident is None:  # never entered
            return
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        import asyncio

        asyncio.run(self._main())

    async def _main(self) -> None:
        import asyncio

        from bench.http_viewers import (
            FileWatch,
            HttpConnection,
            ViewerStats,
            ll_rendition,
            parse_master,
        )

        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        conn = HttpConnection("127.0.0.1", self.port)
        base = f"/media/streams/{self.folder.name}"
        self.stats = ViewerStats(record_seen=False)
        tasks = []
        try:
            master = await conn.request(f"{base}/master.m3u8")
            variants, _audio = parse_master(master.body.decode())
            self.playlist = f"{base}/{variants[0]}"
            rep = re.search(r"(\d+)\.m3u8$", variants[0])
            self.watch = FileWatch(self.folder, reps=(int(rep.group(1)) if rep else 0,))
            tasks = [
                asyncio.create_task(self.watch.run()),
                asyncio.create_task(ll_rendition(conn, self.playlist, self.stats)),
            ]
        except Exception as exc:  # reported with the results, not a reason to lose them
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()
        stopper = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception():
                self.error = f"{type(task.exception()).__name__}: {task.exception()}"
        if self.watch is not None:
            self.watch.stop()
        for task in [stopper, *tasks]:
            task.cancel()
        await asyncio.gather(stopper, *tasks, return_exceptions=True)
        conn.close()

    def stages(self, capture_ms: float, start_ms: float, end_ms: float) -> dict[str, Any]:
        if self.watch is None or self.stats is None:
            return {"error": self.error or "the probe did not start"}
        watch = self.watch
        out = part_stages(
            dict(watch.units),
            dict(self.stats.listed),
            dict(self.stats.served),
            lambda key: watch.capture_end_ms(key, capture_ms),
            start_ms,
            end_ms,
        )
        out["playlist"] = self.playlist
        out["probe_requests"] = self.stats.counts()
        if self.error:
            out["error"] = self.error
        return out


def frames_of(span_s: float, source_fps: float | None) -> int | None:
    """How many frames the source drew in a sampling span (the "of how many")."""
    return round(span_s * source_fps) if source_fps and span_s else None


def measure(browser, config: dict[str, Any], warmup_s: float, sample_s: float) -> dict[str, Any]:
    from tests.support.ingest import (
        media_dir,
        new_stream,
        start_publishing_in_page,
        stream_status,
    )

    low_latency = bool(config.get("low_latency"))
    whip = config.get("ingest", "ws") == "whip"
    players = tuple(config.get("players", ("hls", "dash")))
    query = f"?latency={config['latency']}" if config.get("latency") else ""
    report: dict[str, Any] = {}
    # The form's checkbox decides; the default follows it, so a form without the checkbox
    # (or a view reading its absence as "the default") gives the same mode.
    env = {**EMBEDDED_ENV, "STREAM_LOW_LATENCY_DEFAULT": "1" if low_latency else "0"}
    with daphne_site({**env, **config["env"]}, report=report) as server:
        # One context (a window of its own) per page: in one shared window only the front
        # tab renders, and requestVideoFrameCallback then samples a background viewer at
        # ~1 fps — seen as "8 frames in 8 s" from a viewer playing at 30 fps.
        context = browser.new_context(viewport={"width": 800, "height": 700})
        context.grant_permissions(["camera", "microphone"])
        context.add_init_script(path=str(FRAMECLOCK_JS))
        context.add_init_script(WEBRTC_HTTP_JS)
        context.route(f"**{BENCH_PAGE_PATH}", _serve_html(BENCH_PAGE_HTML))
        context.add_init_script(CLOCK_CAMERA_JS)
        context.add_init_script(low_latency_box_js(low_latency))
        context.add_init_script(INGEST_TRACE_JS)
        if config["publisher"]:
            context.add_init_script(form_fields_js(config["publisher"]))
        contexts = [context]
        watcher: SegmentWatcher | None = None
        probe: PartProbe | None = None
        try:
            publisher = context.new_page()
            publisher.set_default_timeout(60_000)
            if whip:  # stream made on the form's POST, published by the bench page's WHIP
                slug, key = new_stream(server, "Latency", low_latency=low_latency)
                publisher.goto(server.url + BENCH_PAGE_PATH)
                publisher.evaluate(
                    WHIP_PUBLISH_JS, {"url": f"{server.url}/streams/{slug}/whip/", "key": key}
                )
                publisher.wait_for_function(
                    f"fetch('/streams/{slug}/status/').then(r => r.json())"
                    ".then(s => s.status === 'live' && s.segments > 0)",
                    polling=500,
                )
            else:
                transport = config.get("ingest", "ws")  # chunk ingest: "ws" or "http"
                slug = start_publishing_in_page(publisher, server, "Latency", transport)
            status = stream_status(server, slug)
            if status.get("low_latency", False) != low_latency:
                raise RuntimeError(
                    f"stream created with low_latency={status.get('low_latency')!r} "
                    f"(wanted {low_latency}); the create form's low_latency checkbox and "
                    "the status JSON's low_latency come with issue 16's encoder change"
                )
            watcher = SegmentWatcher(media_dir(server, slug)).__enter__()
            if low_latency:
                probe = PartProbe(server.port, media_dir(server, slug))
            viewers = {}
            # media requests answered 404 while sampling
            missing = {player: [0] for player in players}
            failed: dict[str, str] = {}
            sampling = [False]
            for player in players:
                viewer_context = browser.new_context(viewport={"width": 800, "height": 700})
                viewer_context.add_init_script(path=str(FRAMECLOCK_JS))
                viewer_context.add_init_script(WEBRTC_HTTP_JS)
                viewer_context.route(f"**{BENCH_PAGE_PATH}", _serve_html(BENCH_PAGE_HTML))
                if config["viewer"]:
                    body = player_tuning_js(config["viewer"])
                    viewer_context.route("**/static/js/player-tuning.js", _serve_js(body))
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
                if player.startswith("whep"):  # a refusal is a finding, not a reason to stop
                    page.goto(server.url + BENCH_PAGE_PATH)
                    # "whep_video": video only, so no lip sync holds the video for the audio
                    audio = player != "whep_video"
                    try:
                        page.evaluate(
                            WHEP_PLAY_JS,
                            {"url": f"{server.url}/streams/{slug}/whep/", "audio": audio},
                        )
                    except Exception as exc:
                        failed[player] = f"{type(exc).__name__}: {exc}"[:600]
                        continue
                    viewers[player] = page
                    continue
                page.goto(f"{server.url}/streams/{slug}/{player}/{query}")
                paths = list(config["viewer"])
                served = page.evaluate(TUNING_READ_JS, paths)
                assert served == [config["viewer"][p] for p in paths], (served, config["viewer"])
                viewers[player] = page
            for page in viewers.values():
                page.wait_for_function(
                    "document.getElementById('video').currentTime > 1", timeout=90_000
                )
            if probe is not None:  # the stream's LL playlist is served by now
                probe.__enter__()
            time.sleep(warmup_s)  # players settle at their live-sync point
            for page in viewers.values():
                page.evaluate(MEASURE_JS)
            sampling[0] = True
            sample_start_ms = time.time() * 1000
            frames0 = publisher.evaluate("window.__clockSource.frames()")
            queue_depths = []
            sample_end = time.monotonic() + sample_s
            while time.monotonic() < sample_end:
                if not whip:
                    queue_depths.append(publisher.evaluate("window.rtcPublisher.queue.length"))
                time.sleep(0.5)
            sampling[0] = False
            sample_end_ms = time.time() * 1000
            source_fps = (publisher.evaluate("window.__clockSource.frames()") - frames0) / (
                (sample_end_ms - sample_start_ms) / 1000
            )
            watcher.__exit__()
            if probe is not None:
                probe.__exit__()
            capture_ms = stream_status(server, slug)["clock"]["capture_ms"]
            out: dict[str, Any] = {
                "low_latency": low_latency,
                "ingest_transport": config.get("ingest", "ws"),
                "watch_query": query,
                "segment_on_disk_after_capture": _stats(watcher.lags_ms(capture_ms)),
                "publisher_queue_chunks_max": max(queue_depths, default=None),
                "source_fps": round(source_fps, 2),
            }
            for player, error in failed.items():
                out[player] = {"error": error}
            if not whip:
                trace = publisher.evaluate("window.__ingestTrace")
                out["ingest"] = chunk_stages(trace, sample_start_ms, sample_end_ms)
            if probe is not None:
                out["stages"] = probe.stages(capture_ms, sample_start_ms, sample_end_ms)
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
                    "frames_shown": len(samples) + bad,
                    "frames_of": frames_of(span_s, source_fps),
                    "stalls": page.evaluate("window.__waiting"),
                    "media_404s": missing[player][0],
                    "playback_rate_off_1_share": rate_off_share(rates),
                }
                if player.startswith("whep"):
                    out[player]["receiver"] = page.evaluate(WEBRTC_RECEIVER_JS)
            if whip:
                out["whip_delete_status"] = publisher.evaluate("window.__whipStop()")
            else:
                publisher.get_by_test_id("stop").click()
                publisher.wait_for_function(
                    "document.getElementById('publisher').dataset.pubState === 'ended'"
                )
        finally:
            if watcher is not None:
                watcher.__exit__()
            if probe is not None:
                probe.__exit__()
            for each in contexts:
                each.close()
    out["server_log_errors"] = report.get("log_errors", {})
    return out


def rate_off_share(rates: list[float]) -> float | None:
    """Share of the 250 ms samples at a playback rate other than 1x (catch-up at work)."""
    return round(sum(1 for r in rates if abs(r - 1) > 1e-3) / len(rates), 2) if rates else None


def stage_rows(name: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """A low-latency configuration's per-stage rows (ms, p50 with p95 beside)."""
    rows = []
    ingest = result.get("ingest", {})
    stages = result.get("stages", {})
    for label, figures in (
        ("chunk span (MediaRecorder timeslice)", ingest.get("chunk_span", {})),
        ("chunk ready → sent", ingest.get("chunk_ready_to_sent", {})),
        ("chunk sent → acked (queued for FFmpeg)", ingest.get("chunk_sent_to_acked", {})),
        ("capture → fragment written", stages.get("capture_to_fragment_written", {})),
        ("capture → part listed", stages.get("capture_to_part_listed", {})),
        ("capture → part served", stages.get("capture_to_part_served", {})),
    ):
        rows.append(
            {
                "metric": f"{name} stage: {label} p50",
                "value": figures.get("p50_ms"),
                "unit": "ms",
                "p95_ms": figures.get("p95_ms"),
                "n": figures.get("n", 0),
            }
        )
    return rows


def player_row(name: str, player: str, result: dict[str, Any]) -> dict[str, Any]:
    figures = result[player]
    g2g = figures["glass_to_glass"]
    return {
        "metric": f"{name} {player} glass-to-glass p50",
        "value": g2g.get("p50_s"),
        "unit": "s",
        "p95_s": g2g.get("p95_s"),
        "frames": g2g.get("n"),
        "readout_error_p50_ms": figures["readout_minus_measured_ms"]["p50"],
        "player_estimate_p50_s": figures["player_estimate"].get("p50_s"),
        "segment_on_disk_p50_s": result["segment_on_disk_after_capture"].get("p50_s"),
        "stalls": figures.get("stalls"),
        "frames_shown": figures.get("frames_shown"),
        "frames_of": figures.get("frames_of"),
        "rate_not_1x_share": figures.get("playback_rate_off_1_share"),
        "target": f"<= {LL_TARGET_P50_S} s p50, 0 stalls"
        if result.get("watch_query") == "?latency=low"
        else None,
    }


def headline_for(results: dict[str, Any], load: tuple[float, float]) -> str:
    std = results["standard"]
    hls_p50 = std["hls"]["glass_to_glass"].get("p50_s")
    dash_p50 = std["dash"]["glass_to_glass"].get("p50_s")
    met = all(v is not None and v <= TARGET_P50_S for v in (hls_p50, dash_p50))
    headline = (
        f"glass-to-glass (standard): hls.js p50 {hls_p50} s / p95 "
        f"{std['hls']['glass_to_glass'].get('p95_s')} s, dash.js p50 {dash_p50} s / p95 "
        f"{std['dash']['glass_to_glass'].get('p95_s')} s "
        f"({'meets' if met else 'misses'} the {TARGET_P50_S} s p50 target)"
    )
    ll = results.get("low_latency")
    if ll is not None:
        p50s = [ll[p]["glass_to_glass"].get("p50_s") for p in ("hls", "dash")]
        stalls = [ll[p].get("stalls") for p in ("hls", "dash")]
        ll_met = all(v is not None and v <= LL_TARGET_P50_S for v in p50s) and not any(stalls)
        headline += (
            f"; low latency: hls.js p50 {p50s[0]} s, dash.js p50 {p50s[1]} s, stalls "
            f"{stalls[0]}/{stalls[1]}, frames shown {ll['hls'].get('frames_shown')}/"
            f"{ll['hls'].get('frames_of')} and {ll['dash'].get('frames_shown')}/"
            f"{ll['dash'].get('frames_of')} ({'meets' if ll_met else 'misses'} the "
            f"{LL_TARGET_P50_S} s p50, 0 stalls target)"
        )
    return headline + f"; load {load[0]:.1f}->{load[1]:.1f} on a shared 2-core machine"


def run(quick: bool) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from tests.support.chromium import chromium_args, chromium_path

    names = select_configs(os.environ.get("STREAM_LATENCY_CONFIGS"), quick)
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
                players = ", ".join(
                    f"{player} {got['glass_to_glass']}"
                    for player, got in results[name].items()
                    if isinstance(got, dict) and "glass_to_glass" in got
                )
                on_disk = results[name]["segment_on_disk_after_capture"]
                print(f"  {name}: {players}, segment on disk {on_disk}", flush=True)
        finally:
            browser.close()
    load_end = os.getloadavg()

    rows = []
    for name, result in results.items():
        rows += [
            player_row(name, player, result)
            for player in ("hls", "dash", "whep", "whep_video", "webrtc")
            if "glass_to_glass" in result.get(player, {})
        ]
        if result.get("low_latency"):
            rows += stage_rows(name, result)
    return {
        "name": NAME,
        "rows": rows,
        "headline": headline_for(results, (load_start[0], load_end[0])),
        "ratio": None,
        "parameters": {
            "configs": {n: CONFIGS[n] for n in names},
            "warmup_s": warmup_s,
            "sample_s": sample_s,
            "transport": "per configuration (its ingest: ws unless it says http or whip)",
            "source": "640x480 canvas at 30 fps with a 24-bit ms clock, silent audio",
            "target_p50_s": TARGET_P50_S,
            "ll_target_p50_s": LL_TARGET_P50_S,
        },
        "results": results,
        "loadavg": {"start": list(load_start), "end": list(load_end)},
    }
