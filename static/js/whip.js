// WebRTC over HTTP: a WHIP publisher (RFC 9725) and the resource handling WHEP shares with it
// (draft-ietf-wish-whep; whep.js). Protocol and status codes: docs/protocol.md, "WHIP and WHEP".
//
//   POST <endpoint>  application/sdp offer (Authorization: Bearer <token> for WHIP)
//     -> 201 Created, the answer, Location (the session resource), ETag,
//        Link: <turn:...>; rel="ice-server"; username=...; credential=...
//   PATCH <resource> application/trickle-ice-sdpfrag (candidates found after the POST) -> 204
//   DELETE <resource>  ends the session (a WHIP publication ends as with stop)
//
// The offer goes out once ICE gathering is complete or after GATHER_WAIT_MS, whichever is
// first; candidates found later are trickled by PATCH (a server that answers 405/501 to it
// does not trickle: they are dropped, the offer's candidates remain).
//
//   import { WhipPublisher } from "./whip.js";
//   const pub = new WhipPublisher({ url: "/streams/<slug>/whip/", key, onUpdate });
//   await pub.start(mediaStream);  ...  await pub.stop();

const GATHER_WAIT_MS = 1000;
const STATS_EVERY_MS = 1000;

export class WebRtcHttpError extends Error {
  constructor(status, message) {
    super(`${status}: ${message}`);
    this.status = status;
  }
}

// ``Link`` header values (fetch joins several headers with ", ") → RTCIceServer list.
export function parseIceServers(linkHeader) {
  const servers = [];
  if (!linkHeader) return servers;
  const links = linkHeader.match(/<[^>]*>(?:\s*;\s*[^;,=\s]+(?:\s*=\s*(?:"[^"]*"|[^;,]*))?)*/g) || [];
  for (const link of links) {
    const url = link.slice(1, link.indexOf(">"));
    const params = {};
    for (const [, name, quoted, bare] of link.slice(link.indexOf(">") + 1)
      .matchAll(/;\s*([^;,=\s]+)(?:\s*=\s*(?:"([^"]*)"|([^;,]*)))?/g)) {
      params[name.toLowerCase()] = quoted ?? (bare || "").trim();
    }
    if (params.rel !== "ice-server") continue;
    const server = { urls: url };
    if (params.username) server.username = params.username;
    if (params.credential) server.credential = params.credential;
    servers.push(server);
  }
  return servers;
}

// The ICE lines of an SDP (ufrag/pwd and each media section's mid) for trickle sdpfrags.
function iceHeader(sdp) {
  const ufrag = sdp.match(/^a=ice-ufrag:(.*)$/m);
  const pwd = sdp.match(/^a=ice-pwd:(.*)$/m);
  return `${ufrag ? `${ufrag[0].trim()}\r\n` : ""}${pwd ? `${pwd[0].trim()}\r\n` : ""}`;
}

// One session resource (WHIP or WHEP): offer/answer by POST, trickle by PATCH, DELETE.
export class WebRtcHttpSession {
  constructor({ url, token = null, onTrickleError = () => {} }) {
    this.url = new URL(url, location.href).href;
    this.token = token;
    this.location = null;
    this.etag = null;
    this.iceServers = [];
    this.trickle = true;
    this.pending = [];
    this.onTrickleError = onTrickleError;
  }

  headers(extra = {}) {
    return this.token ? { Authorization: `Bearer ${this.token}`, ...extra } : extra;
  }

  // Offer (after up to GATHER_WAIT_MS of gathering) → POST → the answer applied.
  async negotiate(pc) {
    pc.addEventListener("icecandidate", (event) => this.candidate(pc, event.candidate));
    await pc.setLocalDescription(await pc.createOffer());
    await waitForGathering(pc, GATHER_WAIT_MS);
    const offer = pc.localDescription.sdp;
    this.pending = []; // gathered so far: in the offer
    const response = await fetch(this.url, {
      method: "POST", body: offer, cache: "no-store",
      headers: this.headers({ "Content-Type": "application/sdp" }),
    });
    const text = await response.text();
    if (response.status !== 201) {
      // The server's errors are short text; anything else (a proxy's HTML page) by its status.
      const plain = (response.headers.get("Content-Type") || "").startsWith("text/plain");
      throw new WebRtcHttpError(response.status, (plain && text.trim().slice(0, 300)) || response.statusText);
    }
    const where = response.headers.get("Location");
    if (!where) throw new WebRtcHttpError(response.status, "the answer came without a Location");
    this.location = new URL(where, this.url).href;
    this.etag = response.headers.get("ETag");
    this.iceServers = parseIceServers(response.headers.get("Link"));
    if (this.iceServers.length) {
      // For later gathering (an ICE restart): the servers came with the answer.
      try { pc.setConfiguration({ ...pc.getConfiguration(), iceServers: this.iceServers }); } catch { /* kept */ }
    }
    await pc.setRemoteDescription({ type: "answer", sdp: text });
    this.flush(pc);
  }

  candidate(pc, candidate) {
    if (!this.trickle) return;
    if (candidate && candidate.candidate) this.pending.push(candidate);
    else if (!candidate) this.pending.push(null); // end of candidates
    if (this.location) this.flush(pc);
  }

  // Candidates gathered after the offer left, as one sdpfrag per media section they belong to.
  async flush(pc) {
    if (!this.trickle || !this.pending.length || !this.location) return;
    const batch = this.pending.splice(0);
    const sdp = pc.localDescription ? pc.localDescription.sdp : "";
    let frag = iceHeader(sdp);
    const byMid = new Map();
    for (const c of batch) {
      const mid = c ? c.sdpMid : null;
      if (!byMid.has(mid)) byMid.set(mid, []);
      byMid.get(mid).push(c);
    }
    for (const [mid, list] of byMid) {
      frag += "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n";
      if (mid !== null) frag += `a=mid:${mid}\r\n`;
      for (const c of list) frag += c ? `a=${c.candidate}\r\n` : "a=end-of-candidates\r\n";
    }
    try {
      const response = await fetch(this.location, {
        method: "PATCH", body: frag, cache: "no-store",
        headers: this.headers({ "Content-Type": "application/trickle-ice-sdpfrag",
                                ...(this.etag ? { "If-Match": this.etag } : {}) }),
      });
      if (response.status === 405 || response.status === 501) this.trickle = false; // no trickle
      else if (!response.ok) this.onTrickleError(`PATCH: ${response.status} ${(await response.text()).trim()}`);
    } catch (error) {
      this.onTrickleError(`PATCH: ${error.message}`);
    }
  }

  // DELETE the resource. ``keepalive`` for pagehide (the request outlives the page).
  async close({ keepalive = false } = {}) {
    const where = this.location;
    this.location = null;
    if (!where) return null;
    try {
      const response = await fetch(where, { method: "DELETE", headers: this.headers(), keepalive });
      return response.status;
    } catch {
      return null;
    }
  }
}

export function waitForGathering(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, ms);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

// Codec preferences: ``mimeType`` first, the rest as the browser orders them (none dropped).
export function preferCodec(transceiver, kind, mimeType) {
  const caps = RTCRtpReceiver.getCapabilities(kind);
  if (!caps || !transceiver.setCodecPreferences) return false;
  const wanted = caps.codecs.filter((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase());
  if (!wanted.length) return false;
  transceiver.setCodecPreferences([...wanted, ...caps.codecs.filter((c) => !wanted.includes(c))]);
  return true;
}

// --- the publisher: UI-free, the same shape as publisher.js's StreamPublisher -----------------
export class WhipPublisher {
  constructor({ url, key, videoCodec = "video/VP8", maxBitrate = 1_500_000, onUpdate = () => {} }) {
    Object.assign(this, { url, key, videoCodec, maxBitrate, onUpdate });
    this.kind = "webrtc";
    this.state = "idle";
    this.error = "";
    this.connection = "";
    this.stats = {};
    this.bitrateKbps = null;
    this.pc = null;
    this.session = null;
    this.timer = null;
  }

  setState(state) { this.state = state; this.onUpdate(this); }
  setError(message) { this.error = message || ""; this.onUpdate(this); }

  async start(mediaStream) {
    if (!this.key) { this.setError("enter the publish key"); return false; }
    const video = mediaStream.getVideoTracks()[0];
    if (!video) { this.setError("WHIP needs a camera: there is no video track"); return false; }
    this.setState("connecting");
    this.pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    this.pc.addEventListener("connectionstatechange", () => this.onConnection());
    const vt = this.pc.addTransceiver(video, { direction: "sendonly", streams: [mediaStream],
      sendEncodings: [{ maxBitrate: this.maxBitrate }] });
    preferCodec(vt, "video", this.videoCodec);
    // Keep the camera's size when the CPU is short (frames dropped instead): the stream's
    // ladder is sized from the first frame, and every rung needs the pixels.
    const params = vt.sender.getParameters();
    params.degradationPreference = "maintain-resolution";
    await vt.sender.setParameters(params).catch(() => {});
    const audio = mediaStream.getAudioTracks()[0];
    if (audio) this.pc.addTransceiver(audio, { direction: "sendonly", streams: [mediaStream] });
    this.session = new WebRtcHttpSession({ url: this.url, token: this.key, onTrickleError: (m) => this.setError(m) });
    try {
      await this.session.negotiate(this.pc);
    } catch (error) {
      this.pc.close();
      this.setError(error.message);
      this.setState("failed");
      return false;
    }
    window.addEventListener("pagehide", () => this.session.close({ keepalive: true }));
    this.timer = setInterval(() => this.sample(), STATS_EVERY_MS);
    return true;
  }

  onConnection() {
    const state = this.pc.connectionState;
    this.connection = state;
    if (state === "connected" && this.state === "connecting") this.setState("live");
    else if (state === "failed" && this.state !== "ended") {
      this.setError("the WebRTC connection failed (ICE or DTLS)");
      this.halt("failed");
    } else this.onUpdate(this);
  }

  async sample() {
    if (!this.pc) return;
    const report = await this.pc.getStats();
    const s = {};
    const codecs = new Map();
    let bytes = 0;
    report.forEach((entry) => { if (entry.type === "codec") codecs.set(entry.id, entry.mimeType); });
    report.forEach((entry) => {
      if (entry.type === "outbound-rtp") {
        bytes += entry.bytesSent || 0;
        if (entry.kind === "video") {
          Object.assign(s, { framesSent: entry.framesSent, width: entry.frameWidth, height: entry.frameHeight,
                             fps: entry.framesPerSecond, codec: (codecs.get(entry.codecId) || "").replace(/^video\//, "") });
        }
      } else if (entry.type === "candidate-pair" && entry.nominated && entry.state === "succeeded") {
        if (entry.currentRoundTripTime != null) s.rttMs = entry.currentRoundTripTime * 1000;
      }
    });
    const now = performance.now();
    if (this.lastBytes != null) this.bitrateKbps = Math.round(((bytes - this.lastBytes) * 8) / (now - this.lastAt));
    this.lastBytes = bytes;
    this.lastAt = now;
    this.stats = s;
    this.onUpdate(this);
  }

  async stop() {
    this.setState("stopping");
    return this.halt("ended");
  }

  // DELETE ends the publication (the stream ends as with stop); the peer is closed after it.
  async halt(state) {
    clearInterval(this.timer);
    const status = this.session ? await this.session.close() : null;
    if (this.pc) this.pc.close();
    this.connection = "closed";
    if (status !== null && status !== 200 && status !== 204 && state === "ended") {
      this.error = `DELETE answered ${status}`;
    }
    this.setState(state);
    return { state, status };
  }
}
