// Viewer page: hls.js (or native HLS), dash.js or WebRTC (WHEP, whep.js), a live indicator, a
// quality selector (auto + each ladder rung; WHEP has one rendition), an honest latency
// readout and the viewer count.
//
// Latency mode (the page's data-latency-mode, from ?latency=low|standard; the view falls
// back to standard for a stream without low latency): "low" plays LL-HLS parts (hls.js
// lowLatencyMode) or LL-DASH chunks (dash.js's low-latency mode, which the MPD switches on);
// "standard" plays whole segments, also of a low-latency stream. Settings: player-tuning.js.
//
// Latency = server-synced now − wall-clock capture time of the frame on screen. The
// capture time comes from the publisher's capture clock, which the server writes into
// the HLS playlists (EXT-X-PROGRAM-DATE-TIME per segment: hls.playingDate) and the MPD
// (availabilityStartTime: capture clock + currentTime) — not from the players' own
// estimates, which count from when FFmpeg started. Protocol: docs/protocol.md.
// WebRTC (WHEP): from the server sending the frame to the screen (whep.js says why only that).

import { RtcSocket, showStatus } from "./socket.js";
import { ServerClock } from "./clock.js";
import { PLAYER_TUNING } from "./player-tuning.js";
import { WhepPlayer } from "./whep.js";

const root = document.getElementById("viewer");
const video = document.getElementById("video");
const $ = (id) => document.getElementById(id);
const ui = {
  indicator: $("live-indicator"), quality: $("quality"), qualityNow: $("quality-now"),
  latency: $("latency"), latencyMode: $("latency-mode"), latencyNote: $("latency-note"),
  viewers: $("viewers"), playerState: $("player-state"), connection: $("connection"),
};
const WEBRTC = root.dataset.player === "webrtc";
const LOW = root.dataset.latencyMode === "low";
const LL_STREAM = root.dataset.lowLatency === "true";
const PART_TARGET_S = Number(root.dataset.partTarget) || 0.2;
// Player settings (player-tuning.js): what the players are told, and how the page steers.
const LL_TUNING = PLAYER_TUNING.lowLatency;
const STANDARD_ON_LL = PLAYER_TUNING.standardOnLowLatency;
const HLS_CONFIG = LOW ? LL_TUNING.hls : PLAYER_TUNING.hls;
const HLS_TARGET_S = LOW ? LL_TUNING.hlsTargetS : LL_STREAM ? STANDARD_ON_LL.hlsTargetS : PLAYER_TUNING.hlsTargetS;
const MPD_REFRESH_S = PLAYER_TUNING.mpdRefreshS ?? (Number(root.dataset.segmentSeconds) || 0);
const MODE_LABEL = WEBRTC ? "WebRTC" : LOW ? "low latency" : "standard";

const clock = new ServerClock();
const state = {
  status: root.dataset.status, reason: "", clock: null, started: false, player: null,
  mode: LOW ? "low" : "standard", stalls: 0,
};
window.rtcViewer = state; // for tests and the latency benchmark

function setStatus(status, reason = "") {
  state.status = status;
  state.reason = reason;
  root.dataset.state = status;
  const labels = { idle: "waiting for the publisher", live: "● LIVE", ended: "ended", failed: "failed" };
  ui.indicator.textContent = (labels[status] || status) + (reason && status === "failed" ? `: ${reason}` : "");
  ui.indicator.className = `live-indicator status-${status}`;
  if (WEBRTC) {
    // No recording over WebRTC: a live stream only, the connection ends with it.
    // Started once the watch socket's welcome gave this page its audience place (?peer=).
    if (status === "live" && !state.started && state.welcomed) startPlayer();
    else if (status !== "live" && state.player) {
      state.player.stop({ release: false }); // the server ended the session with the stream
      state.player = null;
      setPlayerState(status === "ended" ? "the stream ended (its recording plays over HLS or DASH)" : status);
    }
    return;
  }
  if ((status === "live" || status === "ended") && !state.started) startPlayer();
}

function setPlayerState(text) { ui.playerState.textContent = text; root.dataset.playerState = text; }

// The mode next to the latency: what was asked, corrected by what the player does (hls.js
// is in LL mode only once the playlist has parts; a browser's own HLS player decides alone).
function showMode(player) {
  let label = MODE_LABEL;
  if (LOW && player && !player.lowLatency()) {
    label = player.kind === "native" ? "low latency asked (the browser's player decides)"
      : "low latency asked, playing whole segments";
  }
  if (ui.latencyMode.textContent !== label) ui.latencyMode.textContent = label;
  root.dataset.latencyModeShown = state.mode;
}

// Stalls: the video waiting for data while live, after it first played (seeks excluded:
// they wait too). For the readout and tests; the players count their own as well.
video.addEventListener("playing", () => { state.played = true; });
video.addEventListener("waiting", () => {
  if (!state.played || video.seeking || state.status !== "live") return;
  state.stalls += 1;
  root.dataset.stalls = String(state.stalls);
  // where and how far behind (for tests and the benchmark's stall reports)
  (state.stallLog ||= []).push({ at: video.currentTime, latencyMs: Number(root.dataset.latencyMs) || null });
});

async function refreshStatus() {
  const response = await fetch(root.dataset.statusUrl, { cache: "no-store" });
  if (!response.ok) return null;
  const info = await response.json();
  state.clock = info.clock;
  return info;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForManifest(url) {
  for (;;) {
    const response = await fetch(url, { method: "HEAD", cache: "no-store" }).catch(() => null);
    if (response && response.ok) return;
    await sleep(500);
  }
}

// --- quality selector ---------------------------------------------------------------------
// ``heights``: the player's list (its own order); shown highest first, values = indices.
function fillQualities(heights, onChange) {
  ui.quality.replaceChildren(new Option("auto", "-1"));
  const order = heights.map((height, index) => ({ height, index })).sort((a, b) => b.height - a.height);
  for (const { height, index } of order) ui.quality.add(new Option(`${height}p`, String(index)));
  ui.quality.onchange = () => onChange(Number(ui.quality.value));
  root.dataset.rungs = order.map(({ height }) => `${height}p`).join(",");
}

// --- players ------------------------------------------------------------------------------
async function startHls(url) {
  const { default: Hls } = await import(root.dataset.hlsModule);
  if (!Hls.isSupported()) {
    if (!video.canPlayType("application/vnd.apple.mpegurl")) {
      setPlayerState("this browser plays neither hls.js nor native HLS");
      return null;
    }
    video.src = url; // Safari: native HLS; the quality is chosen by the browser
    fillQualities([], () => {});
    ui.quality.disabled = true;
    return {
      kind: "native",
      stop: () => { video.removeAttribute("src"); video.load(); },
      wallClockMs: () => {
        const start = video.getStartDate ? video.getStartDate().getTime() : NaN;
        return Number.isNaN(start) ? null : start + video.currentTime * 1000;
      },
      estimate: () => null,
      target: () => null,
      lowLatency: () => false, // the browser's own choice, not known to the page
    };
  }
  const hls = new Hls(HLS_CONFIG);
  hls.on(Hls.Events.MANIFEST_PARSED, (_event, data) => {
    fillQualities(data.levels.map((level) => level.height), (index) => { hls.currentLevel = index; });
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (_event, data) => {
    const level = hls.levels[data.level];
    ui.qualityNow.textContent = level ? `playing ${level.height}p` : "";
  });
  hls.on(Hls.Events.ERROR, (_event, data) => {
    if (!data.fatal) return;
    setPlayerState(`error: ${data.details} (recovering)`);
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    else setTimeout(() => hls.startLoad(), 1000);
  });
  hls.loadSource(url);
  hls.attachMedia(video);
  return {
    kind: "hls.js", hls,
    stop: () => hls.destroy(),
    wallClockMs: () => (hls.playingDate ? hls.playingDate.getTime() : null),
    estimate: () => (Number.isFinite(hls.latency) && hls.latency > 0 ? hls.latency : null),
    target: () => (Number.isFinite(hls.targetLatency) && hls.targetLatency > 0 ? hls.targetLatency : null),
    // LL-HLS in use: the mode on and parts in the playlist it plays
    lowLatency: () => hls.lowLatencyMode && Boolean(hls.latestLevelDetails && hls.latestLevelDetails.partList),
  };
}

// The MPD's LL-DASH attributes: availabilityTimeComplete="false" switches dash.js to its
// low-latency mode (dash.js 5 has no setting against it) and availabilityTimeOffset lets it
// ask for segments before they are complete.
const LL_DASH_ATTRIBUTES = /\s(availabilityTimeComplete|availabilityTimeOffset)="[^"]*"/g;

function configureDash(player) {
  // The clock: the MPD's UTCTiming (our /streams/time/), and as dash.js's fallback source
  // the same endpoint instead of its internet time server. (Its default source is put back
  // by initialize(), so clearDefaultUTCTimingSources() before it would not hold.)
  player.updateSettings(PLAYER_TUNING.dashClock);
  player.updateSettings({
    streaming: {
      utcSynchronization: {
        defaultTimingSource: { scheme: "urn:mpeg:dash:utc:http-xsdate:2014", value: new URL(root.dataset.timeUrl, location.href).href },
      },
    },
  });
  if (LOW) {
    player.updateSettings(LL_TUNING.dash);
    player.updateSettings({ streaming: { delay: { liveDelay: LL_TUNING.dashDelayParts * PART_TARGET_S } } });
    return;
  }
  player.updateSettings(PLAYER_TUNING.dash);
  if (!LL_STREAM) return;
  // Standard mode on a low-latency stream: whole segments. The MPD is read without its
  // LL-DASH attributes, and its ServiceDescription (the LL target) is not applied.
  player.updateSettings({
    streaming: { applyServiceDescription: false, delay: { liveDelay: STANDARD_ON_LL.dashLiveDelay } },
  });
  player.addResponseInterceptor(async (response) => {
    const request = response.request && response.request.customData && response.request.customData.request;
    if (request && request.type === "MPD" && typeof response.data === "string") {
      response.data = response.data.replace(LL_DASH_ATTRIBUTES, "");
    }
    return response;
  });
}

async function startDash(url) {
  const dashjs = await import(root.dataset.dashModule);
  const player = dashjs.MediaPlayer().create();
  configureDash(player);
  const events = dashjs.MediaPlayer.events;
  player.on(events.STREAM_INITIALIZED, () => {
    const reps = player.getRepresentationsByType("video");
    fillQualities(reps.map((rep) => rep.height), (index) => {
      const auto = index < 0;
      player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: auto } } } });
      if (!auto) player.setRepresentationForTypeByIndex("video", index, true);
    });
  });
  player.on(events.QUALITY_CHANGE_RENDERED, (event) => {
    if (event.mediaType !== "video") return;
    const rep = event.newRepresentation;
    ui.qualityNow.textContent = rep && rep.height ? `playing ${rep.height}p` : "";
  });
  player.on(events.ERROR, (event) => {
    setPlayerState(`error: ${event.error && (event.error.message || event.error.code)}`);
  });
  player.initialize(video, url, true);
  let refresher = null;
  if (MPD_REFRESH_S > 0) {
    // From the first manifest on (not during dash.js's own start-up).
    player.on(events.STREAM_INITIALIZED, () => {
      if (refresher !== null || !player.isDynamic()) return;
      refresher = setInterval(() => {
        if (!player.isReady()) return;
        if (!player.isDynamic()) { clearInterval(refresher); return; } // ended: a static MPD
        // dash.js skips it while a refresh is under way
        player.refreshManifest((manifest) => {
          if (manifest) state.mpdRefreshes = (state.mpdRefreshes || 0) + 1;
        });
      }, MPD_REFRESH_S * 1000);
    });
  }
  return {
    kind: "dash.js", player,
    stop: () => { clearInterval(refresher); player.reset(); },
    // availabilityStartTime is the capture clock: media time t was captured at clock + t.
    wallClockMs: () => (state.clock ? state.clock.capture_ms + video.currentTime * 1000 : null),
    estimate: () => {
      const value = player.getCurrentLiveLatency();
      return Number.isFinite(value) && value > 0 ? value : null;
    },
    target: () => {
      const value = player.getTargetLiveDelay();
      return Number.isFinite(value) && value > 0 ? value : null;
    },
    lowLatency: () => player.getLowLatencyModeEnabled(),
  };
}

// WHEP: no manifest to wait for; a refused or failed session is tried again while live.
const WHEP_RETRY_MS = 3000;
async function startWhep() {
  // ?peer=: the watch socket's audience place already counts this page (docs/protocol.md).
  const url = root.dataset.whepUrl + (state.peer ? `?peer=${encodeURIComponent(state.peer)}` : "");
  const whep = new WhepPlayer({
    url, video,
    onUpdate: (player) => {
      if (ui.connection) ui.connection.textContent = player.pc ? player.pc.connectionState : player.state;
      if (player.state === "failed" && state.player && state.player.whep === player) retryWhep(player.error);
    },
  });
  setPlayerState("WebRTC: connecting");
  if (!(await whep.start())) {
    retryWhep(whep.error);
    return null;
  }
  return {
    kind: "WebRTC", whep,
    stop: (options) => whep.stop(options),
    latencyMs: () => whep.latencyMs,
    estimate: () => null,
    target: () => null,
    lowLatency: () => true,
  };
}

function retryWhep(error) {
  setPlayerState(`WebRTC: ${error || "failed"} (trying again)`);
  if (state.player) state.player.stop();
  state.player = null;
  state.started = false;
  setTimeout(() => { if (state.status === "live" && !state.started) startPlayer(); }, WHEP_RETRY_MS);
}

async function startPlayer() {
  state.started = true;
  if (WEBRTC) {
    state.player = await startWhep();
    if (state.player) state.player.startedAt = performance.now();
    return;
  }
  if (root.querySelector("[data-testid=purged]")) { setPlayerState("recording removed"); return; }
  const kind = root.dataset.player;
  // Absolute: dash.js runs new URL() on the MPD's URL for every response (its CMCD reporter
  // warned "Invalid URL" on each MPD refresh given a path).
  const url = new URL(kind === "hls" ? root.dataset.hlsUrl : root.dataset.dashUrl, location.href).href;
  setPlayerState("waiting for the first segments");
  // Two finished segments first: a player that joins with a one-segment window (dash.js)
  // can stall at 0 s. Low-latency mode: one (its players join among the parts of the
  // segment being written, PART-HOLD-BACK or liveDelay behind).
  await waitForManifest(url.replace(/[^/]+$/, LOW ? "chunk-stream0-00001.m4s" : "chunk-stream0-00002.m4s"));
  await waitForManifest(url);
  if (kind === "hls") await waitForManifest(url.replace(/master\.m3u8$/, "media_0.m3u8"));
  await refreshStatus();
  state.player = kind === "hls" ? await startHls(url) : await startDash(url);
  if (state.player) {
    state.player.startedAt = performance.now();
    setPlayerState(`${state.player.kind}: loading`);
  }
}

// A player that has not shown a frame 45 s after loading, or whose playhead has not moved
// for 20 s while the stream is live, is started again: dash.js can freeze without
// recovering.
const STUCK_START_MS = 45000;
const STUCK_LIVE_MS = 20000;
const progress = { time: -1, at: 0 };

function restartIfStuck() {
  const player = state.player;
  if (!player) return;
  const now = performance.now();
  if (video.currentTime !== progress.time) {
    progress.time = video.currentTime;
    progress.at = now;
  }
  const neverStarted = video.currentTime === 0 && video.readyState < 2;
  const since = neverStarted ? now - player.startedAt : now - progress.at;
  const limit = neverStarted ? STUCK_START_MS : STUCK_LIVE_MS;
  if (since < limit || (!neverStarted && (state.status !== "live" || video.paused))) return;
  console.warn(`rtcsite: ${player.kind} showed no new frame in ${Math.round(since / 1000)} s; restarting it`);
  player.stop();
  state.player = null;
  state.restarts = (state.restarts || 0) + 1;
  progress.time = -1;
  startPlayer();
}

// hls.js keeps its distance from the end of the playlist *it knows*, which lags the real
// edge by up to a playlist reload, and it never corrects it while playing at 1x: where it
// joins decides its latency for the whole session (docs/decisions.md, "Viewer latency:
// hls.js steered on the capture clock"). So the page steers it on the capture clock: a little faster while behind the
// target and the buffer has room, a little slower while ahead, else 1x. dash.js steers
// itself on the wall clock (PLAYER_TUNING.dash.streaming.liveCatchup).
const STEER = {
  deadband: 0.15, gain: 0.25, fastest: 1.15, slowest: 0.95,
  keepAhead: LOW ? LL_TUNING.hlsKeepAheadS : 0.6,
};

function bufferedAhead() {
  const t = video.currentTime;
  for (let i = 0; i < video.buffered.length; i += 1) {
    if (video.buffered.start(i) <= t + 0.1 && t <= video.buffered.end(i)) return video.buffered.end(i) - t;
  }
  return 0;
}

function steerHls(player, latencyS) {
  if (!player.hls || !(HLS_TARGET_S > 0)) return;
  const error = latencyS - HLS_TARGET_S;
  let rate = 1;
  if (error > STEER.deadband && bufferedAhead() > STEER.keepAhead) {
    rate = Math.min(STEER.fastest, 1 + error * STEER.gain);
  } else if (error < -2 * STEER.deadband) {
    rate = STEER.slowest;
  }
  if (Math.abs(video.playbackRate - rate) > 0.001) video.playbackRate = rate;
}

// Low-latency hls.js far behind its own target (a stall at start, a slow connection): to
// its live sync position (PLAYER_TUNING.lowLatency.hlsResyncBehindS).
function resyncHls(player) {
  const hls = player.hls;
  if (!LOW || !hls || !(LL_TUNING.hlsResyncBehindS > 0)) return;
  const target = player.target();
  const position = hls.liveSyncPosition;
  if (target === null || !Number.isFinite(position) || hls.latency - target <= LL_TUNING.hlsResyncBehindS) return;
  const now = performance.now();
  if (state.resyncedAt && now - state.resyncedAt < LL_TUNING.hlsResyncEveryS * 1000) return;
  if (position <= video.currentTime) return;
  state.resyncedAt = now;
  state.resyncs = (state.resyncs || 0) + 1;
  root.dataset.resyncs = String(state.resyncs);
  video.currentTime = position;
}

// --- readouts -----------------------------------------------------------------------------
function tick() {
  restartIfStuck();
  const player = state.player;
  if (!player) return;
  const playing = video.readyState >= 2 && !video.paused;
  setPlayerState(`${player.kind}: ${playing ? "playing" : video.ended ? "finished" : "buffering"}`);
  root.dataset.videoWidth = String(video.videoWidth);
  root.dataset.playerLowLatency = String(Boolean(player.lowLatency()));
  showMode(player);
  root.dataset.currentTime = video.currentTime.toFixed(2);
  if (state.status !== "live") {
    if (player.hls && video.playbackRate !== 1) video.playbackRate = 1; // no live edge to hold
    ui.latency.textContent = "— (recording)";
    delete root.dataset.latencyMs;
    return;
  }
  if (player.latencyMs) { showWebRtcLatency(player, playing); return; }
  const shown = player.wallClockMs();
  if (!playing || shown === null) return;
  const latency = clock.now() - shown;
  root.dataset.latencyMs = String(Math.round(latency));
  ui.latency.textContent = `${(latency / 1000).toFixed(1)} s`;
  steerHls(player, latency / 1000);
  resyncHls(player);
  const estimate = player.estimate();
  const target = player.target();
  const notes = [];
  if (estimate !== null) {
    notes.push(`${player.kind} estimates ${estimate.toFixed(1)} s` + (LOW && target !== null ? `, target ${target.toFixed(1)} s` : ""));
    root.dataset.playerEstimateMs = String(Math.round(estimate * 1000));
  }
  const rate = video.playbackRate;
  root.dataset.playbackRate = rate.toFixed(2);
  if (Math.abs(rate - 1) >= 0.005) notes.push(`${rate > 1 ? "catching up" : "slowing"} at ${rate.toFixed(2)}×`);
  if (state.stalls) notes.push(`${state.stalls} stall${state.stalls > 1 ? "s" : ""}`);
  if (state.resyncs) notes.push(`moved to the live edge ${state.resyncs}×`);
  if (state.clock && state.clock.source !== "publisher") notes.push("anchored to the server's receipt: upload delay not counted");
  ui.latencyNote.textContent = notes.length ? `(${notes.join("; ")})` : "";
}

// WHEP: server send → playing now (whep.js says why only that), the jitter buffer beside it.
function showWebRtcLatency(player, playing) {
  const whep = player.whep;
  whep.sample().then(() => {
    const latency = whep.latencyMs;
    if (!playing || latency === null) {
      ui.latencyNote.textContent = playing ? "(waiting for the server's first RTCP sender report)" : "";
      return;
    }
    root.dataset.latencyMs = String(Math.round(latency));
    ui.latency.textContent = `${(latency / 1000).toFixed(2)} s`;
    const notes = ["from the server sending each frame; capture, upload and server encode not counted"];
    if (whep.jitterBufferMs !== null) notes.push(`jitter buffer ${Math.round(whep.jitterBufferMs)} ms`);
    ui.latencyNote.textContent = `(${notes.join("; ")})`;
  });
}

// --- socket: status and viewer count -------------------------------------------------------
const socket = new RtcSocket(root.dataset.wsPath);
showStatus(socket);
socket.on("welcome", (msg) => {
  // This page's place in the audience: a WHEP session started with it is not counted again.
  state.peer = msg.you && msg.you.peer;
  state.welcomed = true;
  ui.viewers.textContent = String(msg.viewers);
  root.dataset.viewers = String(msg.viewers);
  if (msg.heartbeat_interval) socket.setPingInterval(msg.heartbeat_interval * 1000);
  state.clock = msg.stream.clock;
  setStatus(msg.stream.status, msg.stream.reason);
});
socket.on("viewers", (msg) => {
  ui.viewers.textContent = String(msg.count);
  root.dataset.viewers = String(msg.count);
});
socket.on("stream", async (msg) => {
  if (msg.status === "live") await refreshStatus();
  setStatus(msg.status, msg.reason);
});
socket.on("error", (msg) => setPlayerState(`${msg.code}: ${msg.message}`));

root.dataset.stalls = "0";
showMode();
setStatus(state.status);
clock.sync().then(() => { root.dataset.clockOffset = String(Math.round(clock.offset)); });
setInterval(tick, 500);
socket.connect();
