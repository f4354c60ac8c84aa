// A WHEP player (draft-ietf-wish-whep): receive a live stream's already-encoded H.264 and
// Opus over WebRTC into a <video>. The HTTP side is whip.js's WebRtcHttpSession (POST offer
// → 201 answer + Location, PATCH trickle, DELETE on leave).
//
// Latency readout (``sample()`` → ``latencyMs``): the time from the *server sending* the
// frame now playing to now: getStats' ``estimatedPlayoutTimestamp`` of the video receiver
// is that frame's time on the sender's clock (Chromium maps its RTP timestamp through the
// sender's RTCP sender reports, and the sender's clock onto this page's), against the stats'
// own ``timestamp``. The server (aiortc) stamps its reports when it *sends*, so the time
// before that (camera, upload, decode and encode on the server) is NOT in it: the page says
// so (docs/decisions.md, "Pages: WHEP latency readout"). requestVideoFrameCallback's
// ``captureTime`` would be per frame, but Chromium gives it only with the abs-capture-time
// RTP extension, which aiortc does not send.
//
//   import { WhepPlayer } from "./whep.js";
//   const player = new WhepPlayer({ url: "/streams/<slug>/whep/", video, onUpdate });
//   await player.start();  ...  await player.stop();

import { WebRtcHttpSession, preferCodec } from "./whip.js";

const NTP_UNIX_OFFSET_MS = 2208988800000; // 1900-01-01 to 1970-01-01

export class WhepPlayer {
  constructor({ url, video, onUpdate = () => {} }) {
    Object.assign(this, { url, video, onUpdate });
    this.kind = "WebRTC (WHEP)";
    this.state = "idle";
    this.error = "";
    this.pc = null;
    this.session = null;
    this.latencyMs = null; // server send → playing now (see above)
    this.jitterBufferMs = null; // the receiver's jitter buffer, averaged over the frames so far
    this.framesDecoded = 0;
  }

  setState(state) { this.state = state; this.onUpdate(this); }

  async start() {
    this.setState("connecting");
    this.pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    const video = this.pc.addTransceiver("video", { direction: "recvonly" });
    preferCodec(video, "video", "video/H264"); // what the server sends: its one encode
    this.pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    this.pc.addEventListener("track", (event) => {
      stream.addTrack(event.track);
      if (this.video.srcObject !== stream) this.video.srcObject = stream;
    });
    this.pc.addEventListener("connectionstatechange", () => {
      const state = this.pc.connectionState;
      if (state === "connected") this.setState("playing");
      else if (state === "failed" || state === "closed") this.setState(state);
      else this.onUpdate(this);
    });
    this.session = new WebRtcHttpSession({ url: this.url, onTrickleError: (m) => { this.error = m; } });
    try {
      await this.session.negotiate(this.pc);
    } catch (error) {
      this.pc.close();
      this.error = error.message;
      this.status = error.status;
      this.setState("failed");
      return false;
    }
    this.onPageHide = () => this.session.close({ keepalive: true });
    window.addEventListener("pagehide", this.onPageHide);
    return true;
  }

  // Latency and jitter buffer from one getStats (see the top of this file); null until the
  // first sender report has arrived.
  async sample() {
    if (!this.pc) return;
    let video = null;
    (await this.pc.getStats()).forEach((entry) => {
      if (entry.type === "inbound-rtp" && entry.kind === "video") video = entry;
    });
    if (!video) return;
    if (video.estimatedPlayoutTimestamp > 0) {
      this.latencyMs = video.timestamp - (video.estimatedPlayoutTimestamp - NTP_UNIX_OFFSET_MS);
    }
    if (video.jitterBufferEmittedCount) {
      this.jitterBufferMs = (video.jitterBufferDelay / video.jitterBufferEmittedCount) * 1000;
    }
    this.framesDecoded = video.framesDecoded || 0;
  }

  // ``release``: DELETE the session; false once the stream has ended (the server closes its
  // sessions with the stream, so the resource is gone: a DELETE would be a 404).
  async stop({ release = true } = {}) {
    window.removeEventListener("pagehide", this.onPageHide);
    const pc = this.pc;
    this.pc = null;
    const status = this.session && release ? await this.session.close() : null;
    if (pc) pc.close();
    this.video.srcObject = null;
    this.setState("closed");
    return status;
  }
}
