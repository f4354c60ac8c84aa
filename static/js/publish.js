// Publisher page: camera preview → MediaRecorder (WebM VP8+Opus, short timeslice) → chunks
// uploaded in order with a sequence number, by HTTP POST (multipart, like FormData with a
// File) or over a WebSocket (binary frame: 4-byte big-endian seq + bytes). Protocol:
// docs/protocol.md, "Live stream ingest".
//
// The upload part is exported for other pages (the face page publishes a canvas with boxes):
// `new Publisher(ui, target)` with `ui` holding the same elements as this page (any may be a
// stand-in), `target` = { ingestUrl, stopUrl, wsPath }; set `publisher.stream` to any
// MediaStream before `start()`. This page's own wiring runs only when #publisher exists.

import { fetchToken } from "./socket.js";

const MIME = "video/webm;codecs=vp8,opus";
const FINAL_ERRORS = new Set(["bad-key", "key-missing", "not-found", "closed", "wrong-process"]);

const root = document.getElementById("publisher");
const $ = (id) => document.getElementById(id);
const ui = root && {
  key: $("publish-key"), transport: $("transport"), timeslice: $("timeslice"),
  start: $("start"), stop: $("stop"), preview: $("preview"), state: $("pub-state"),
  sent: $("pub-sent"), queue: $("pub-queue"), bitrate: $("pub-bitrate"),
  serverQueue: $("pub-server-queue"), segments: $("pub-segments"), error: $("pub-error"),
  status: $("stream-status"),
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class FinalError extends Error {}

// --- transports: send(seq, blob) resolves with the server's reply or throws ----------------
class HttpTransport {
  constructor(key, target) { this.key = key; this.target = target; }
  async open() {}
  async send(seq, blob) {
    const form = new FormData();
    form.append("seq", String(seq));
    form.append("chunk", new File([blob], `chunk-${seq}.webm`, { type: "video/webm" }));
    const response = await fetch(this.target.ingestUrl, {
      method: "POST", body: form, headers: { Authorization: `Bearer ${this.key}` },
    });
    const body = await response.json().catch(() => ({ error: "http", message: `HTTP ${response.status}` }));
    if (response.ok) return body;
    return { error: body.error || "http", message: body.message || `HTTP ${response.status}`,
             retryAfter: Number(response.headers.get("Retry-After") || 1) };
  }
  async stop() {
    const response = await fetch(this.target.stopUrl, {
      method: "POST", headers: { Authorization: `Bearer ${this.key}` },
    });
    return response.json();
  }
  close() {}
}

class WsTransport {
  constructor(key, target, onError) {
    this.key = key; this.target = target; this.onError = onError; this.pending = new Map(); this.ws = null;
  }
  async open() {
    const token = await fetchToken();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}${this.target.wsPath}?token=${encodeURIComponent(token)}&v=1`;
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    await new Promise((resolve, reject) => {
      this.ws.onmessage = (event) => {
        const msg = JSON.parse(event.data);
        if (msg.type === "ready") resolve();
        else if (msg.type === "error") reject(new FinalError(`${msg.code}: ${msg.message}`));
      };
      this.ws.onclose = (event) => reject(new FinalError(`socket closed (${event.code})`));
      this.ws.onopen = () => this.ws.send(JSON.stringify({ type: "publish", key: this.key }));
    });
    this.ws.onmessage = (event) => this.onMessage(JSON.parse(event.data));
    this.ws.onclose = (event) => {
      for (const resolve of this.pending.values()) {
        resolve({ error: "closed", message: `socket closed (${event.code})` });
      }
      this.pending.clear();
    };
  }
  onMessage(msg) {
    const key = msg.type === "stopped" ? "stop" : msg.seq;
    const resolve = this.pending.get(key);
    if (!resolve) {
      if (msg.type === "error") this.onError(`${msg.code}: ${msg.message}`);
      return;
    }
    this.pending.delete(key);
    if (msg.type === "error") resolve({ error: msg.code, message: msg.message, retryAfter: msg.retry_after || 1 });
    else resolve(msg);
  }
  async send(seq, blob) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return { error: "closed", message: "socket is not open" };
    const data = new Uint8Array(await blob.arrayBuffer());
    const frame = new Uint8Array(4 + data.length);
    new DataView(frame.buffer).setUint32(0, seq);
    frame.set(data, 4);
    const reply = new Promise((resolve) => this.pending.set(seq, resolve));
    this.ws.send(frame);
    return reply;
  }
  async stop() {
    const reply = new Promise((resolve) => this.pending.set("stop", resolve));
    this.ws.send(JSON.stringify({ type: "stop" }));
    return reply;
  }
  close() { if (this.ws) this.ws.close(1000); }
}

// --- the publisher ----------------------------------------------------------------------------
export class Publisher {
  constructor(ui, target) {
    this.ui = ui;
    this.target = target;
    this.stream = null;
    this.recorder = null;
    this.queue = [];
    this.queueBytes = 0;
    this.seq = 0;
    this.sent = 0;
    this.acked = []; // [time, bytes] for the bitrate window
    this.running = false;
    this.wake = null;
  }

  setState(state) { this.ui.state.textContent = state; this.ui.root.dataset.pubState = state; }
  setError(message) { this.ui.error.textContent = message || "—"; }

  async preview() {
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
      this.ui.preview.srcObject = this.stream;
    } catch (error) {
      this.setError(`camera: ${error.message}`);
    }
  }

  async start() {
    const key = this.ui.key.value.trim();
    if (!key) { this.setError("enter the publish key"); return; }
    if (!this.stream) await this.preview();
    if (!this.stream) return;
    if (!MediaRecorder.isTypeSupported(MIME)) { this.setError(`${MIME} is not supported here`); return; }
    this.transport = this.ui.transport.value === "ws"
      ? new WsTransport(key, this.target, (message) => this.setError(message))
      : new HttpTransport(key, this.target);
    this.ui.start.disabled = true;
    this.setState("connecting");
    try {
      await this.transport.open();
    } catch (error) {
      this.setError(error.message); this.setState("failed"); this.ui.start.disabled = false; return;
    }
    this.running = true;
    this.seq = 0;
    this.recorder = new MediaRecorder(this.stream, { mimeType: MIME, videoBitsPerSecond: 1_500_000 });
    this.recorder.ondataavailable = (event) => {
      if (!event.data || event.data.size === 0) return;
      this.queue.push({ seq: this.seq++, blob: event.data });
      this.queueBytes += event.data.size;
      this.render();
      if (this.wake) this.wake();
    };
    this.recorder.start(Number(this.ui.timeslice.value) || 250);
    this.ui.stop.disabled = false;
    this.setState("live");
    this.pump();
  }

  async pump() {
    while (this.running || this.queue.length) {
      if (!this.queue.length) {
        await new Promise((resolve) => { this.wake = resolve; });
        this.wake = null;
        continue;
      }
      const item = this.queue[0];
      let reply;
      try {
        reply = await this.transport.send(item.seq, item.blob);
      } catch (error) {
        reply = { error: "network", message: error.message, retryAfter: 1 };
      }
      if (reply.error === "busy" || reply.error === "rate-limited" || reply.error === "network") {
        this.setError(`${reply.error}: ${reply.message} (retrying)`);
        await sleep(1000 * (reply.retryAfter || 1));
        continue; // same chunk again
      }
      this.queue.shift();
      this.queueBytes -= item.blob.size;
      if (reply.error) {
        this.setError(`seq ${item.seq}: ${reply.error}: ${reply.message}`);
        if (FINAL_ERRORS.has(reply.error)) { await this.halt("failed"); return; }
      } else {
        this.sent += 1;
        this.acked.push([performance.now(), item.blob.size]);
        this.ui.serverQueue.textContent = `${Math.round(reply.queue_bytes / 1024)} KB / ${Math.round(reply.queue_limit / 1024)} KB`;
        this.ui.segments.textContent = String(reply.segments);
        if (reply.last_error) this.setError(reply.last_error);
      }
      this.render();
    }
  }

  render() {
    this.ui.sent.textContent = String(this.sent);
    this.ui.queue.textContent = `${this.queue.length} chunks / ${Math.round(this.queueBytes / 1024)} KB`;
    const now = performance.now();
    this.acked = this.acked.filter(([t]) => now - t < 3000);
    const bytes = this.acked.reduce((sum, [, n]) => sum + n, 0);
    this.ui.bitrate.textContent = this.acked.length ? `${Math.round((bytes * 8) / 3 / 1000)} kbit/s` : "—";
  }

  async stop() {
    this.ui.stop.disabled = true;
    this.setState("stopping");
    if (this.recorder && this.recorder.state !== "inactive") {
      const stopped = new Promise((resolve) => { this.recorder.onstop = resolve; });
      this.recorder.stop();
      await stopped; // the last chunk has been queued
    }
    this.running = false;
    if (this.wake) this.wake();
    while (this.queue.length) await sleep(50);
    await this.halt("ended");
  }

  async halt(state) {
    this.running = false;
    if (this.recorder && this.recorder.state !== "inactive") this.recorder.stop();
    try {
      const reply = await this.transport.stop();
      if (reply && reply.state) this.ui.status.textContent = reply.state;
    } catch (error) {
      this.setError(`stop: ${error.message}`);
    }
    this.transport.close();
    this.queue = [];
    this.queueBytes = 0;
    this.render();
    this.setState(state);
    this.ui.stop.disabled = true;
    this.ui.start.disabled = true; // a stream goes live once; create a new one to publish again
  }
}

if (root) {
  ui.root = root;
  const publisher = new Publisher(ui, {
    ingestUrl: root.dataset.ingestUrl, stopUrl: root.dataset.stopUrl, wsPath: root.dataset.wsPath,
  });
  ui.start.addEventListener("click", () => publisher.start());
  ui.stop.addEventListener("click", () => publisher.stop());
  publisher.preview();
  window.rtcPublisher = publisher; // for tests and debugging
}
