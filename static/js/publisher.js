// Publish any MediaStream to a live stream: MediaRecorder (WebM VP8+Opus, short timeslice)
// → chunks uploaded in order with a sequence number, by HTTP POST (multipart, a File per
// chunk) or over a WebSocket (binary frame: 4-byte big-endian seq + bytes). The capture
// clock (server-synced wall-clock ms of media time 0) goes with the first chunk so the
// HLS/DASH timelines follow capture time. Protocol: docs/protocol.md, "Live stream ingest".
//
//   import { publishMediaStream } from "./publisher.js";
//   const pub = await publishMediaStream(canvas.captureStream(30), {
//     key, ingestUrl, stopUrl, wsPath, transport: "ws", onUpdate: (pub) => render(pub) });
//   ... await pub.stop();
//
// The publisher page (publish-page.js) and the face-detection page use it.

import { fetchToken } from "./socket.js";
import { ServerClock } from "./clock.js";

export const MIME = "video/webm;codecs=vp8,opus";
// The camera a published stream starts from (the ladder's top rung is 480p).
export const PUBLISH_VIDEO = { width: 640, height: 480 };
const FINAL_ERRORS = new Set(["bad-key", "key-missing", "not-found", "closed", "wrong-process", "bad-clock"]);
// "wrong-process" comes with retry_after while the process running the stream may have died
// (its lease expires then and the next chunk takes the stream over): retried this many times
// in a row before it is final (a live process renews its lease: a sticky-ingest mistake).
const ELSEWHERE_RETRIES = 3;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class FinalError extends Error {}

// --- transports: send(seq, blob, extra) resolves with the server's reply -----------------
export class HttpTransport {
  constructor({ key, ingestUrl, stopUrl }) { Object.assign(this, { key, ingestUrl, stopUrl }); }
  async open() {}
  async setClock() {} // sent with the first chunk instead
  async send(seq, blob, { captureMs } = {}) {
    const form = new FormData();
    form.append("seq", String(seq));
    if (captureMs != null) form.append("capture_ms", String(captureMs));
    form.append("chunk", new File([blob], `chunk-${seq}.webm`, { type: "video/webm" }));
    const response = await fetch(this.ingestUrl, {
      method: "POST", body: form, headers: { Authorization: `Bearer ${this.key}` },
    });
    const body = await response.json().catch(() => ({ error: "http", message: `HTTP ${response.status}` }));
    if (response.ok) return body;
    return { error: body.error || "http", message: body.message || `HTTP ${response.status}`,
             retryAfter: Number(response.headers.get("Retry-After") || body.retry_after || 1) };
  }
  async stop() {
    const response = await fetch(this.stopUrl, {
      method: "POST", headers: { Authorization: `Bearer ${this.key}` },
    });
    return response.json();
  }
  close() {}
}

export class WsTransport {
  constructor({ key, wsPath, onStray = () => {} }) {
    Object.assign(this, { key, wsPath, onStray });
    this.pending = new Map();
    this.ws = null;
  }
  async open() {
    const token = await fetchToken();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}${this.wsPath}?token=${encodeURIComponent(token)}&v=1`;
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
      // The server process went away (restart, crash): a network error, retried on a new
      // socket (send() reopens; another process may take the stream over).
      for (const resolve of this.pending.values()) {
        resolve({ error: "network", message: `socket closed (${event.code})`, retryAfter: 1 });
      }
      this.pending.clear();
    };
  }
  // A new socket for the same stream (the chunk is then sent again with the same seq).
  async reopen() {
    try {
      await this.open();
      return null;
    } catch (error) {
      const final = error instanceof FinalError && !error.message.startsWith("socket closed");
      return { error: final ? "closed" : "network", message: error.message, retryAfter: 1 };
    }
  }
  // Sent before the first chunk (same ordered socket): anchors the stream's timeline.
  async setClock(captureMs) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "clock", capture_ms: captureMs }));
    }
  }
  onMessage(msg) {
    const key = msg.type === "stopped" ? "stop" : msg.seq;
    const resolve = this.pending.get(key);
    if (!resolve) {
      if (msg.type === "error") this.onStray(`${msg.code}: ${msg.message}`);
      return;
    }
    this.pending.delete(key);
    if (msg.type === "error") resolve({ error: msg.code, message: msg.message, retryAfter: msg.retry_after || 1 });
    else resolve(msg);
  }
  async send(seq, blob) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      const failed = await this.reopen();
      if (failed) return failed;
    }
    const data = new Uint8Array(await blob.arrayBuffer());
    const frame = new Uint8Array(4 + data.length);
    new DataView(frame.buffer).setUint32(0, seq);
    frame.set(data, 4);
    const reply = new Promise((resolve) => this.pending.set(seq, resolve));
    this.ws.send(frame);
    return reply;
  }
  async stop() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      const failed = await this.reopen();
      if (failed) return failed;
    }
    const reply = new Promise((resolve) => this.pending.set("stop", resolve));
    this.ws.send(JSON.stringify({ type: "stop" }));
    return reply;
  }
  close() { if (this.ws) this.ws.close(1000); }
}

// --- the publisher: UI-free; onUpdate(this) after every change ----------------------------
export class StreamPublisher {
  constructor({ key, ingestUrl, stopUrl, wsPath, transport = "http", timeslice = 250,
                videoBitsPerSecond = 1_500_000, onUpdate = () => {} }) {
    Object.assign(this, { key, ingestUrl, stopUrl, wsPath, transportKind: transport, timeslice,
                          videoBitsPerSecond, onUpdate });
    this.state = "idle";
    this.error = "";
    this.recorder = null;
    this.queue = [];
    this.queueBytes = 0;
    this.seq = 0;
    this.sent = 0;
    this.acked = []; // [time, bytes] for the bitrate window
    this.lastReply = null;
    this.running = false;
    this.wake = null;
    this.captureMs = null;
    this.clock = new ServerClock();
  }

  setState(state) { this.state = state; this.onUpdate(this); }
  setError(message) { this.error = message || ""; this.onUpdate(this); }

  get bitrateKbps() {
    const now = performance.now();
    this.acked = this.acked.filter(([t]) => now - t < 3000);
    if (!this.acked.length) return null;
    const bytes = this.acked.reduce((sum, [, n]) => sum + n, 0);
    return Math.round((bytes * 8) / 3 / 1000);
  }

  // Start publishing ``mediaStream``; resolves once recording runs (or the start failed).
  async start(mediaStream) {
    if (!this.key) { this.setError("enter the publish key"); return false; }
    if (!MediaRecorder.isTypeSupported(MIME)) { this.setError(`${MIME} is not supported here`); return false; }
    const options = { key: this.key, ingestUrl: this.ingestUrl, stopUrl: this.stopUrl,
                      wsPath: this.wsPath, onStray: (message) => this.setError(message) };
    this.transport = this.transportKind === "ws" ? new WsTransport(options) : new HttpTransport(options);
    this.setState("connecting");
    try {
      await Promise.all([this.transport.open(), this.clock.sync()]);
    } catch (error) {
      this.setError(error.message); this.setState("failed"); return false;
    }
    this.running = true;
    this.seq = 0;
    this.recorder = new MediaRecorder(mediaStream, { mimeType: MIME, videoBitsPerSecond: this.videoBitsPerSecond });
    this.recorder.ondataavailable = (event) => {
      if (!event.data || event.data.size === 0) return;
      this.queue.push({ seq: this.seq++, blob: event.data });
      this.queueBytes += event.data.size;
      this.onUpdate(this);
      if (this.wake) this.wake();
    };
    this.recorder.start(this.timeslice);
    // Media time 0 of the recording is (within a frame) now: the capture clock.
    this.captureMs = Math.round(this.clock.now());
    await this.transport.setClock(this.captureMs);
    this.setState("live");
    this.pump();
    return true;
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
        const extra = item.seq === 0 ? { captureMs: this.captureMs } : {};
        reply = await this.transport.send(item.seq, item.blob, extra);
      } catch (error) {
        reply = { error: "network", message: error.message, retryAfter: 1 };
      }
      if (reply.error === "busy" || reply.error === "rate-limited" || reply.error === "network") {
        this.setError(`${reply.error}: ${reply.message} (retrying)`);
        await sleep(1000 * (reply.retryAfter || 1));
        continue; // same chunk again
      }
      if (reply.error === "wrong-process" && (this.elsewhere || 0) < ELSEWHERE_RETRIES) {
        this.elsewhere = (this.elsewhere || 0) + 1;
        this.setError(`${reply.error}: ${reply.message} (retrying in ${reply.retryAfter || 1} s)`);
        await sleep(1000 * (reply.retryAfter || 1));
        continue; // same chunk again: another process takes the stream over if its own died
      }
      this.elsewhere = 0;
      this.queue.shift();
      this.queueBytes -= item.blob.size;
      if (reply.error) {
        this.setError(`seq ${item.seq}: ${reply.error}: ${reply.message}`);
        if (FINAL_ERRORS.has(reply.error)) { await this.halt("failed"); return; }
      } else {
        this.sent += 1;
        this.acked.push([performance.now(), item.blob.size]);
        this.lastReply = reply;
        if (reply.last_error) this.error = reply.last_error;
      }
      this.onUpdate(this);
    }
  }

  async stop() {
    this.setState("stopping");
    if (this.recorder && this.recorder.state !== "inactive") {
      const stopped = new Promise((resolve) => { this.recorder.onstop = resolve; });
      this.recorder.stop();
      await stopped; // the last chunk has been queued
    }
    this.running = false;
    if (this.wake) this.wake();
    while (this.queue.length) await sleep(50);
    return this.halt("ended");
  }

  async halt(state) {
    this.running = false;
    if (this.recorder && this.recorder.state !== "inactive") this.recorder.stop();
    let reply = null;
    try {
      reply = await this.transport.stop();
    } catch (error) {
      this.error = `stop: ${error.message}`;
    }
    this.transport.close();
    this.queue = [];
    this.queueBytes = 0;
    this.stopReply = reply;
    this.setState(state);
    return reply;
  }
}

export async function publishMediaStream(mediaStream, options) {
  const publisher = new StreamPublisher(options);
  await publisher.start(mediaStream);
  return publisher;
}
