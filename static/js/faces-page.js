// Face page: camera → canvas with face boxes. Boxes come from face-api in the browser
// (TinyFaceDetector, weights served from static/vendor) or from the server (OpenCV), which
// gets a resized WebP frame every N ms by WebSocket (binary) or HTTP POST — one frame in
// flight at a time: the next frame is captured only after the previous answer.
// The canvas (video + boxes) can be published as a live stream with publisher.js.
// Protocol: docs/protocol.md, "Face detection".

import { RtcSocket, fetchToken, pageToken, showStatus } from "./socket.js";
import { describeMediaError, openLocalMedia } from "./local-media.js";
import { PUBLISH_VIDEO, publishMediaStream } from "./publisher.js";
import { keepFormsLocal } from "./forms.js";
import { uploadHealth } from "./upload-health.js";

keepFormsLocal();

const BOX_COLOUR = "#00ff00"; // the server's BOX_BGR; tests read it back from the stream
const BOX_WIDTH = 4;
const WINDOW_MS = 3000; // rate window

const $ = (id) => document.getElementById(id);
const root = $("faces");
const ui = {
  detector: $("face-detector"), transport: $("face-transport"), interval: $("face-interval"),
  sendWidth: $("face-send-width"), minNeighbors: $("face-min-neighbors"),
  scaleFactor: $("face-scale-factor"), video: $("face-video"), canvas: $("face-canvas"),
  boxes: $("face-boxes"), backend: $("face-backend"), error: $("face-error"),
};
const ctx = ui.canvas.getContext("2d");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const testid = (id) => document.querySelector(`[data-testid="${id}"]`);

let boxes = []; // in video pixels
let camera = null;

function setError(message) { ui.error.textContent = message || "—"; }

// --- stats per detector row ----------------------------------------------------------------
class Stats {
  constructor(name) { this.name = name; this.done = []; this.frames = 0; this.dropped = 0; }
  record({ boxes: count, rtt, detectMs }) {
    const now = performance.now();
    this.frames += 1;
    this.done.push(now);
    this.done = this.done.filter((t) => now - t < WINDOW_MS);
    const fps = this.done.length > 1 ? ((this.done.length - 1) * 1000) / (now - this.done[0]) : 0;
    this.set("boxes", String(count));
    this.set("frames", String(this.frames));
    this.set("fps", `${fps.toFixed(1)} fps`);
    if (rtt !== undefined) this.set("rtt", `${rtt.toFixed(1)} ms`);
    this.set("time", `${detectMs.toFixed(1)} ms`);
  }
  drop() { this.dropped += 1; this.set("dropped", String(this.dropped)); }
  set(what, text) { const el = testid(`${what}-${this.name}`); if (el) el.textContent = text; }
}
const stats = { browser: new Stats("browser"), ws: new Stats("ws"), http: new Stats("http") };

// --- drawing -------------------------------------------------------------------------------
function showBoxes(list) {
  boxes = list;
  ui.boxes.textContent = JSON.stringify(list.map((b) => [b.x, b.y, b.w, b.h].map(Math.round)));
  root.dataset.boxes = String(list.length);
}

function draw() {
  const { videoWidth: w, videoHeight: h } = ui.video;
  if (!w || !h) return;
  if (ui.canvas.width !== w || ui.canvas.height !== h) { ui.canvas.width = w; ui.canvas.height = h; }
  ctx.drawImage(ui.video, 0, 0, w, h);
  ctx.strokeStyle = BOX_COLOUR;
  ctx.lineWidth = BOX_WIDTH;
  for (const b of boxes) ctx.strokeRect(b.x, b.y, b.w, b.h);
}

function onFrame() {
  draw();
  if (ui.detector.value === "browser") browser.detect();
  schedule();
}

function schedule() {
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    ui.video.requestVideoFrameCallback(onFrame);
  } else {
    requestAnimationFrame(onFrame);
  }
}

// --- in the browser: face-api ------------------------------------------------------------------
const browser = {
  api: null, loading: null, busy: false, options: null, lastStart: -Infinity,
  async load() {
    if (!this.loading) {
      this.loading = (async () => {
        const faceapi = await import(root.dataset.faceapiUrl);
        await faceapi.tf.ready();
        if (!faceapi.tf.getBackend()) await faceapi.tf.setBackend("cpu");
        await faceapi.nets.tinyFaceDetector.loadFromUri(root.dataset.modelUrl);
        this.options = new faceapi.TinyFaceDetectorOptions({ inputSize: 320, scoreThreshold: 0.5 });
        ui.backend.textContent = `face-api on ${faceapi.tf.getBackend()}`;
        this.api = faceapi;
      })();
    }
    return this.loading;
  },
  async detect() {
    // One detection at a time, at most one per interval; frames in between reuse the boxes.
    if (this.busy || performance.now() - this.lastStart < Number(ui.interval.value)) return;
    this.busy = true;
    this.lastStart = performance.now();
    try {
      if (!this.api) await this.load();
      const started = performance.now();
      const found = await this.api.detectAllFaces(ui.video, this.options);
      const detectMs = performance.now() - started;
      if (ui.detector.value !== "browser") return;
      showBoxes(found.map((d) => ({ x: d.box.x, y: d.box.y, w: d.box.width, h: d.box.height })));
      stats.browser.record({ boxes: found.length, detectMs });
    } catch (error) {
      setError(`face-api: ${error.message}`);
      await sleep(1000);
    } finally {
      this.busy = false;
    }
  },
};

// --- on the server: pushed frames ----------------------------------------------------------------
function params() {
  return {
    min_neighbors: Number(ui.minNeighbors.value),
    scale_factor: Number(ui.scaleFactor.value),
  };
}

class WsFrames {
  constructor() {
    this.socket = new RtcSocket(root.dataset.wsPath);
    this.pending = null;
    this.ready = new Promise((resolve) => this.socket.on("hello", () => { resolve(); this.sendParams(); }));
    const answer = (msg) => { if (this.pending) { this.pending(msg); this.pending = null; } };
    this.socket.on("faces", answer);
    this.socket.on("params", () => setError(""));
    this.socket.on("error", (msg) => {
      if (msg.ref === "frame") answer({ error: msg.code, message: msg.message });
      else setError(`${msg.code}: ${msg.message}`);
    });
    this.socket.addEventListener("state", (event) => {
      if (event.detail.state !== "open") answer({ error: "closed", message: "socket not open" });
    });
    showStatus(this.socket);
    this.socket.connect();
  }
  sendParams() { this.socket.send({ type: "params", params: params() }); }
  async detect(blob) {
    await this.ready;
    const reply = new Promise((resolve) => { this.pending = resolve; });
    if (!this.socket.sendBinary(blob)) { this.pending = null; return { error: "closed", message: "socket not open" }; }
    return reply;
  }
}

class HttpFrames {
  constructor() { this.token = pageToken(); }
  sendParams() {}
  async detect(blob, retry = true) {
    const query = new URLSearchParams(params());
    const response = await fetch(`${root.dataset.detectUrl}?${query}`, {
      method: "POST", body: blob,
      headers: { Authorization: `Bearer ${this.token}`, "Content-Type": blob.type },
    });
    const body = await response.json().catch(() => ({ error: "http", message: `HTTP ${response.status}` }));
    if (response.status === 401 && retry) {
      this.token = await fetchToken();
      return this.detect(blob, false);
    }
    return body;
  }
}

const server = {
  transports: {}, running: false, grabber: document.createElement("canvas"),
  transport(name) {
    if (!this.transports[name]) this.transports[name] = name === "ws" ? new WsFrames() : new HttpFrames();
    return this.transports[name];
  },
  async grab() {
    const { videoWidth: w, videoHeight: h } = ui.video;
    const width = Math.min(w, Math.max(64, Number(ui.sendWidth.value) || w));
    const height = Math.round((h * width) / w);
    this.grabber.width = width;
    this.grabber.height = height;
    this.grabber.getContext("2d").drawImage(ui.video, 0, 0, width, height);
    return new Promise((resolve) => this.grabber.toBlob(resolve, "image/webp", 0.8));
  },
  async run() {
    if (this.running) return;
    this.running = true;
    root.dataset.state = "server";
    while (ui.detector.value === "server") {
      const started = performance.now();
      if (!ui.video.videoWidth) { await sleep(100); continue; }
      const name = ui.transport.value;
      const blob = await this.grab();
      const sent = performance.now();
      let reply;
      try {
        reply = await this.transport(name).detect(blob);
      } catch (error) {
        reply = { error: "network", message: error.message };
      }
      const rtt = performance.now() - sent;
      if (ui.detector.value !== "server") break;
      if (reply.error) {
        if (reply.error === "busy" || reply.error === "rate-limited") stats[name].drop();
        setError(`${name}: ${reply.error}: ${reply.message}`);
        await sleep(reply.error === "rate-limited" ? 1000 : 200);
        continue;
      }
      const sx = ui.video.videoWidth / reply.width;
      const sy = ui.video.videoHeight / reply.height;
      showBoxes(reply.boxes.map((b) => ({ x: b.x * sx, y: b.y * sy, w: b.w * sx, h: b.h * sy })));
      stats[name].record({ boxes: reply.boxes.length, rtt, detectMs: reply.detect_ms });
      const wait = Number(ui.interval.value) - (performance.now() - started);
      if (wait > 0) await sleep(wait);
    }
    this.running = false;
  },
};

// --- publishing the canvas (publisher.js, shared with the publisher page) -------------------
function setUpPublisher() {
  const section = $("face-publisher");
  if (!section.dataset.slug) return null;
  const pui = {
    key: $("fp-key"), transport: $("fp-transport"), timeslice: $("fp-timeslice"),
    start: $("fp-start"), stop: $("fp-stop"), error: $("fp-error"), status: $("fp-status"),
  };
  const showHealth = uploadHealth("fp-");
  const render = (pub) => {
    section.dataset.pubState = pub.state;
    showHealth(pub);
    if (pub.stopReply && pub.stopReply.state) pui.status.textContent = pub.stopReply.state;
  };
  const state = { publisher: null };
  pui.start.addEventListener("click", async () => {
    const key = pui.key.value.trim();
    if (!key) { pui.error.textContent = "enter the publish key"; return; }
    pui.start.disabled = true;
    // The canvas carries the video and the boxes; the microphone goes along.
    const stream = ui.canvas.captureStream(30);
    for (const track of camera ? camera.getAudioTracks() : []) stream.addTrack(track);
    state.publisher = await publishMediaStream(stream, {
      key, ingestUrl: section.dataset.ingestUrl, stopUrl: section.dataset.stopUrl,
      wsPath: section.dataset.wsPath, transport: pui.transport.value,
      timeslice: Number(pui.timeslice.value) || Number(pui.timeslice.defaultValue) || 250, onUpdate: render,
    });
    pui.stop.disabled = state.publisher.state !== "live";
  });
  pui.stop.addEventListener("click", async () => {
    pui.stop.disabled = true;
    if (state.publisher) await state.publisher.stop();
  });
  return state;
}

// --- start -----------------------------------------------------------------------------------
function onDetectorChange() {
  const mode = ui.detector.value;
  root.dataset.state = mode;
  showBoxes([]);
  setError("");
  if (mode === "server") server.run();
  if (mode === "browser") browser.load().catch((error) => setError(`face-api: ${error.message}`));
}

async function start() {
  const { stream, error } = await openLocalMedia({ video: PUBLISH_VIDEO });
  if (!stream?.getVideoTracks().length) {
    for (const track of stream?.getTracks() ?? []) track.stop();
    setError(`camera: ${describeMediaError(error)}`);
    return;
  }
  camera = stream;
  ui.video.srcObject = camera;
  await ui.video.play().catch(() => {});
  schedule();
  root.dataset.camera = "on";
}

ui.detector.addEventListener("change", onDetectorChange);
for (const input of [ui.minNeighbors, ui.scaleFactor]) {
  input.addEventListener("change", () => { for (const t of Object.values(server.transports)) t.sendParams(); });
}
window.rtcFaces = { stats, server, browser, publisher: setUpPublisher(), boxes: () => boxes };
start();
