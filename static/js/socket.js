// A WebSocket to the site: signed token, JSON messages, reconnect with backoff.
//
// Usage: const s = new RtcSocket("/ws/lobby/"); s.on("hello", msg => ...); s.connect();
// A token close code (missing/invalid/expired) triggers one token refresh from /me/token/
// before the next attempt; a final one (close-codes.js) ends the socket: no reconnect.

import { FINAL_CLOSE_CODES, TOKEN_CLOSE_CODES } from "./close-codes.js";

export function pageToken() {
  const meta = document.querySelector('meta[name="rtc-ws-token"]');
  return meta ? meta.content : "";
}

export async function fetchToken() {
  const response = await fetch("/me/token/", { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(`token refresh failed: HTTP ${response.status}`);
  const body = await response.json();
  return body.token;
}

export class RtcSocket extends EventTarget {
  constructor(path, { token = pageToken(), maxBackoffMs = 15000, pingIntervalMs = 15000 } = {}) {
    super();
    this.path = path;
    this.token = token;
    this.maxBackoffMs = maxBackoffMs;
    this.pingIntervalMs = pingIntervalMs;
    this.attempt = 0;
    this.ws = null;
    this.stopped = false;
    this.state = "idle";
    this.lastClose = null;
    this.handlers = new Map();
    this.params = {}; // extra query parameters (e.g. resume=<previous peer id>)
  }

  // Change the keepalive pace now (pings double as presence heartbeats on room sockets).
  setPingInterval(ms) {
    if (!(ms > 0)) return;
    this.pingIntervalMs = ms;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: "ping", t: Date.now() }), ms);
    }
  }

  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(handler);
    return this;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ ...this.params, token: this.token, v: "1" });
    return `${scheme}//${location.host}${this.path}?${query}`;
  }

  setState(state, detail = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...detail } }));
  }

  connect() {
    this.stopped = false;
    this.setState("connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.attempt = 0;
      this.setState("open");
      this.pinger = setInterval(() => this.send({ type: "ping", t: Date.now() }), this.pingIntervalMs);
    });
    ws.addEventListener("message", (event) => this.dispatch(event.data));
    ws.addEventListener("close", (event) => this.onClose(event));
    return this;
  }

  dispatch(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      console.warn("rtcsite: non-JSON message ignored");
      return;
    }
    for (const handler of this.handlers.get(msg.type) || []) handler(msg);
    for (const handler of this.handlers.get("*") || []) handler(msg);
  }

  async onClose(event) {
    clearInterval(this.pinger);
    this.lastClose = { code: event.code, reason: event.reason };
    if (this.stopped || FINAL_CLOSE_CODES.has(event.code)) {
      this.setState("closed", this.lastClose);
      return;
    }
    if (TOKEN_CLOSE_CODES.has(event.code)) {
      try {
        this.token = await fetchToken();
      } catch (err) {
        this.setState("error", { ...this.lastClose, error: String(err) });
      }
    }
    this.attempt += 1;
    const backoff = Math.min(this.maxBackoffMs, 500 * 2 ** Math.min(this.attempt, 6));
    const delay = backoff / 2 + Math.random() * (backoff / 2); // jitter: no thundering herd
    this.setState("reconnecting", { ...this.lastClose, delay });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  // Binary frames (e.g. images for face detection); false when not connected.
  sendBinary(data) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(data);
      return true;
    }
    return false;
  }

  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pinger);
    if (this.ws) this.ws.close(1000);
  }
}

// What a page says while the server's room service (Redis) is away: the socket stays open
// and the server sends {"type": "service", "state": "reconnecting"} then "ok" once it has
// re-established rooms and resynced this page (docs/protocol.md).
export const SERVICE_RECONNECTING = "Reconnecting to the room service…";

// Mirror a socket's state into the footer indicator (and the room service's state).
export function showStatus(socket, element = document.getElementById("ws-status")) {
  if (!element) return;
  const labels = { connecting: "connecting…", open: "live", reconnecting: "reconnecting…",
                   closed: "disconnected", error: "connection error", idle: "" };
  socket.addEventListener("state", (event) => {
    element.dataset.state = event.detail.state;
    element.textContent = labels[event.detail.state] ?? event.detail.state;
  });
  socket.on("service", (msg) => {
    if (socket.state !== "open") return;
    const down = msg.state === "reconnecting";
    element.dataset.state = down ? "service-reconnecting" : "open";
    element.textContent = down ? SERVICE_RECONNECTING : labels.open;
  });
}

// Show the room service's state in a banner (`element`, hidden while all is well); the
// banner also goes when the socket itself closes (its own state says why then).
export function showServiceBanner(socket, element) {
  if (!element) return;
  const show = (down) => {
    element.textContent = down ? SERVICE_RECONNECTING : "";
    element.hidden = !down;
    element.dataset.service = down ? "reconnecting" : "ok";
  };
  socket.on("service", (msg) => show(msg.state === "reconnecting"));
  socket.addEventListener("state", (event) => {
    if (event.detail.state !== "open" && element.dataset.service === "reconnecting") show(false);
  });
}
