// One RTCPeerConnection to the server's aiortc peer (echo and relay rooms).
//
// No DOM here. The browser always offers and the server answers: our tracks go out on
// sendrecv transceivers (recvonly when we have no camera/mic), our ICE candidates are
// trickled as `candidate` messages (the server's are in its answer: aiortc gathers them
// before answering). The server never renegotiates: in a relay room it switches who is
// shown in our receiving tracks. When the connection fails, or the server says its peer
// failed, we start over with a fresh RTCPeerConnection and a new offer (the server
// replaces its peer on every offer).
//
// Events: "stream" {stream} (the server's media, fired when it changes),
//         "state" {state, problem}.

const DEFAULTS = { connectTimeoutMs: 20000, maxRestarts: 5 };

export class ServerLink extends EventTarget {
  constructor({ send, iceServers = [], iceTransportPolicy = "all", localStream = null, ...options }) {
    super();
    this.send = send;
    this.iceServers = iceServers;
    this.iceTransportPolicy = iceTransportPolicy;
    this.localStream = localStream;
    this.options = { ...DEFAULTS, ...options };
    this.pc = null;
    this.stream = null;
    this.state = "new";
    this.problem = "";
    this.restarts = 0;
    this.offersSent = 0;
    this.connectedAt = null;
    this.createdAt = performance.now();
    this.closed = false;
  }

  async start() {
    this.teardownPc();
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: "max-bundle",
    });
    this.pc = pc;
    const outbox = [];
    let offerSent = false;
    for (const kind of ["audio", "video"]) {
      const track = this.localStream?.getTracks().find((t) => t.kind === kind);
      if (track) pc.addTransceiver(track, { direction: "sendrecv", streams: [this.localStream] });
      else pc.addTransceiver(kind, { direction: "recvonly" });
    }
    pc.addEventListener("icecandidate", ({ candidate }) => {
      const msg = { type: "candidate", candidate: candidate ? candidate.toJSON() : null };
      if (offerSent) this.send(msg);
      else outbox.push(msg);
    });
    pc.addEventListener("track", (event) => {
      const stream = event.streams[0] ?? this.stream ?? new MediaStream();
      if (!event.streams[0]) stream.addTrack(event.track);
      if (stream !== this.stream) {
        this.stream = stream;
        this.emit("stream", { stream });
      }
    });
    pc.addEventListener("connectionstatechange", () => {
      if (pc !== this.pc) return;
      this.setState(pc.connectionState);
      if (pc.connectionState === "connected") {
        this.connectedAt ??= performance.now();
        clearTimeout(this.connectTimer);
      }
      if (pc.connectionState === "failed") this.restart("the connection to the server failed");
    });
    this.setState("connecting");
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      if (pc === this.pc && pc.connectionState !== "connected") {
        this.setState(pc.connectionState, "no media connection to the server yet (firewall? TURN needed?)");
      }
    }, this.options.connectTimeoutMs);
    await pc.setLocalDescription(await pc.createOffer());
    if (pc !== this.pc) return;
    this.send({ type: "offer", sdp: pc.localDescription.sdp });
    this.offersSent += 1;
    offerSent = true;
    for (const msg of outbox.splice(0)) this.send(msg);
  }

  async handleAnswer(msg) {
    const pc = this.pc;
    if (!pc || pc.signalingState !== "have-local-offer") return; // an answer to an older offer
    await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
  }

  // The server reports its side's state (`server-peer`); "failed" there means start over.
  handleServerState(state) {
    if (state === "failed") this.restart("the server lost the media connection");
  }

  restart(reason) {
    if (this.closed) return;
    if (this.restarts >= this.options.maxRestarts) {
      this.setState("failed", `${reason}; gave up after ${this.restarts} attempts`);
      return;
    }
    this.restarts += 1;
    this.setState("connecting", `${reason}; reconnecting…`);
    this.start().catch((err) => this.setState("failed", String(err)));
  }

  // An `error` reply to our offer (bad SDP, no codec in common, server busy): say so.
  handleError(msg) {
    if (msg.ref === "offer") this.setState("failed", msg.message);
  }

  setState(state, problem = "") {
    this.state = state;
    this.problem = problem;
    this.emit("state", { state, problem });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  teardownPc() {
    clearTimeout(this.connectTimer);
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
    this.stream = null;
  }

  close() {
    this.closed = true;
    this.teardownPc();
    this.setState("closed");
  }
}
