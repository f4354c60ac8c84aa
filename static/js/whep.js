// A WHEP player (draft-ietf-wish-whep): receive a live stream's already-encoded H.264 and
// Opus over WebRTC into a <video>. The HTTP side is whip.js's WebRtcHttpSession (POST offer
// → 201 answer + Location, PATCH trickle, DELETE on leave).
//
// Latency readout (``latencyMs``): per frame shown, the time from the *server sending it*
// to it being on screen: requestVideoFrameCallback's ``captureTime``, which Chromium derives
// for a remote frame from its RTP timestamp and the sender's RTCP sender reports (the
// server's wall clock, mapped onto this page's clock by Chromium), against the frame's
// expected display time. The server stamps its reports when it sends, so the time before
// that (camera, upload, decode, encode on the server) is NOT in it: docs/protocol.md, "WHEP".
//
//   import { WhepPlayer } from "./whep.js";
//   const player = new WhepPlayer({ url: "/streams/<slug>/whep/", video, onUpdate });
//   await player.start();  ...  await player.stop();

import { WebRtcHttpSession, preferCodec } from "./whip.js";

export class WhepPlayer {
  constructor({ url, video, onUpdate = () => {} }) {
    Object.assign(this, { url, video, onUpdate });
    this.kind = "WebRTC (WHEP)";
    this.state = "idle";
    this.error = "";
    this.pc = null;
    this.session = null;
    this.latencyMs = null; // server send → on screen, the last frame shown (see above)
    this.networkMs = null; // server send → received, the same frame
    this.frames = 0;
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
    this.watchFrames();
    return true;
  }

  watchFrames() {
    if (!this.video.requestVideoFrameCallback) return; // no per-frame metadata: no readout
    const onFrame = (_now, meta) => {
      this.frames += 1;
      if (meta.captureTime !== undefined && meta.captureTime > 0) {
        this.latencyMs = meta.expectedDisplayTime - meta.captureTime;
        this.networkMs = meta.receiveTime !== undefined ? meta.receiveTime - meta.captureTime : null;
      }
      if (this.pc) this.video.requestVideoFrameCallback(onFrame);
    };
    this.video.requestVideoFrameCallback(onFrame);
  }

  // The receiver's jitter buffer, averaged over the frames so far (ms), from getStats.
  async jitterBufferMs() {
    if (!this.pc) return null;
    let value = null;
    (await this.pc.getStats()).forEach((entry) => {
      if (entry.type === "inbound-rtp" && entry.kind === "video" && entry.jitterBufferEmittedCount) {
        value = (entry.jitterBufferDelay / entry.jitterBufferEmittedCount) * 1000;
      }
    });
    return value;
  }

  async stop() {
    window.removeEventListener("pagehide", this.onPageHide);
    const pc = this.pc;
    this.pc = null;
    const status = this.session ? await this.session.close() : null;
    if (pc) pc.close();
    this.video.srcObject = null;
    this.setState("closed");
    return status;
  }
}
