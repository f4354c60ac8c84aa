// Full-mesh WebRTC: one RTCPeerConnection per remote peer, negotiated over the room socket.
//
// No DOM here: the page feeds signaling messages in (handleSignal) and listens to events:
//   "stream"  {peer, stream}       a remote MediaStream to show (fired when it changes)
//   "state"   {peer, state, problem} connection state of one link ("new" … "connected" …)
//   "removed" {peer}               the link was closed (peer left, or we left)
//
// Negotiation is "perfect negotiation" (W3C WebRTC §10.7 example): each side may offer at
// any time; on an offer collision the impolite side ignores the incoming offer and the
// polite side rolls back. Politeness comes from comparing peer ids, so both ends agree
// without a message. To avoid collisions in the common case, the newcomer (who learned
// of the others from `welcome`) offers first; the others wait for its offer, and offer
// themselves only if none arrives (fallback), e.g. after a lost message.
//
// ICE candidates that arrive before the remote description are queued per peer. A link
// that goes "failed" (or stays "disconnected") restarts ICE with an offer flagged
// `restart: true`. A link that never connects says why (ICE candidate errors, e.g. a
// TURN 401) instead of spinning forever.

const DEFAULTS = {
  offerFallbackMs: 8000, // waiting side offers itself if the newcomer's offer never comes
  disconnectedRestartMs: 4000, // "disconnected" this long → ICE restart
  connectTimeoutMs: 20000, // no connection this long → report a problem on the link
};

export class PeerLink {
  constructor(controller, peer, { initiator }) {
    this.controller = controller;
    this.peer = peer;
    this.polite = controller.selfId > peer; // exactly one side of each pair is polite
    this.initiator = initiator;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.pendingCandidates = []; // received before the remote description
    this.holdCandidates = false; // ours wait until the description they belong to is sent
    this.outbox = [];
    this.restartPending = false;
    this.restarts = 0; // ICE restarts we started
    this.remoteRestarts = 0; // offers flagged restart received
    this.offersSent = 0;
    this.offersReceived = 0;
    this.stream = null;
    this.problem = "";
    this.iceErrors = [];
    this.fallbackStream = null;
    this.createdAt = performance.now();
    this.connectedAt = null;
    this.closed = false;
    this.timers = new Set();
    this.pc = this.createConnection();
  }

  createConnection() {
    const { iceServers, iceTransportPolicy, localStream } = this.controller;
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy, bundlePolicy: "max-bundle" });
    if (localStream) {
      for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
    }

    pc.addEventListener("negotiationneeded", () => this.onNegotiationNeeded());
    pc.addEventListener("icecandidate", ({ candidate }) => {
      const message = { type: "candidate", to: this.peer, candidate: candidate ? candidate.toJSON() : null };
      if (this.holdCandidates) this.outbox.push(message);
      else this.controller.send(message);
    });
    pc.addEventListener("icecandidateerror", (event) => {
      // e.g. 401 from a TURN server with a wrong/expired credential; 701 = unreachable
      this.iceErrors.push({ url: event.url, code: event.errorCode, text: event.errorText });
      if (this.iceErrors.length > 10) this.iceErrors.shift();
    });
    pc.addEventListener("track", (event) => this.onTrack(event));
    pc.addEventListener("connectionstatechange", () => this.onConnectionState());
    this.later(() => this.checkConnected(), this.controller.options.connectTimeoutMs);
    if (this.initiator) this.ensureReceivers(pc);
    else this.later(() => this.offerFallback(), this.controller.options.offerFallbackMs);
    return pc;
  }

  // Whoever offers first asks to receive both kinds, whatever it sends itself (a viewer
  // without a camera still sees the others). The answering side needs nothing: applying
  // the offer creates its receivers and pairs them with the tracks it added.
  ensureReceivers(pc = this.pc) {
    const kinds = new Set(pc.getTransceivers().map((t) => t.receiver.track.kind));
    for (const kind of ["audio", "video"]) {
      if (!kinds.has(kind)) pc.addTransceiver(kind, { direction: "recvonly" });
    }
  }

  get state() {
    return this.closed ? "closed" : this.pc.connectionState;
  }

  later(fn, ms) {
    const id = setTimeout(() => {
      this.timers.delete(id);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(id);
    return id;
  }

  emitState() {
    this.controller.emit("state", { peer: this.peer, state: this.state, problem: this.problem });
  }

  // --- negotiation -----------------------------------------------------------------------
  onNegotiationNeeded() {
    // The newcomer offers first; the others answer (see offerFallback).
    if (!this.initiator && !this.pc.remoteDescription) return;
    return this.makeOffer();
  }

  offerFallback() {
    // The newcomer's offer never came (lost, or it does not know us yet): offer ourselves.
    // If both sides end up offering, perfect negotiation sorts it out.
    if (this.pc.remoteDescription || this.makingOffer || this.pc.signalingState !== "stable") return;
    this.initiator = true;
    this.ensureReceivers();
    return this.makeOffer();
  }

  async makeOffer() {
    if (this.closed || this.makingOffer || this.pc.signalingState !== "stable") return;
    this.holdCandidates = true;
    try {
      this.makingOffer = true;
      const restart = this.restartPending;
      await this.pc.setLocalDescription(); // implicit createOffer
      // An incoming offer may have rolled ours back (we are polite) while we waited.
      if (this.pc.localDescription?.type !== "offer" || this.pc.signalingState !== "have-local-offer") return;
      this.restartPending = false;
      this.offersSent += 1;
      const message = { type: "offer", to: this.peer, sdp: this.pc.localDescription.sdp };
      if (restart) message.restart = true;
      this.controller.send(message);
    } catch (err) {
      this.controller.log(`offer to ${this.peer} failed`, err);
    } finally {
      this.makingOffer = false;
      this.releaseCandidates();
    }
  }

  releaseCandidates() {
    this.holdCandidates = false;
    for (const message of this.outbox.splice(0)) this.controller.send(message);
  }

  async handleDescription(type, sdp, restart) {
    const pc = this.pc;
    const offerCollision = type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
    this.ignoreOffer = !this.polite && offerCollision;
    if (this.ignoreOffer) return; // the impolite side keeps its own offer; the other rolls back
    if (type === "offer") {
      this.offersReceived += 1;
      if (restart) this.remoteRestarts += 1;
    }
    try {
      await pc.setRemoteDescription({ type, sdp }); // rolls back our own offer if polite
    } catch (err) {
      // e.g. a stale answer after a rollback: nothing to do, the next round fixes it
      this.controller.log(`setRemoteDescription(${type}) from ${this.peer} failed`, err);
      return;
    }
    await this.flushCandidates();
    if (type === "offer") {
      this.holdCandidates = true;
      try {
        await pc.setLocalDescription();
        this.controller.send({ type: "answer", to: this.peer, sdp: pc.localDescription.sdp });
      } catch (err) {
        this.controller.log(`answer to ${this.peer} failed`, err);
      } finally {
        this.releaseCandidates();
      }
    }
  }

  async handleCandidate(candidate) {
    if (!this.pc.remoteDescription) {
      this.pendingCandidates.push(candidate); // before the offer/answer: keep for later
      return;
    }
    await this.addCandidate(candidate);
  }

  async flushCandidates() {
    const queued = this.pendingCandidates.splice(0);
    for (const candidate of queued) await this.addCandidate(candidate);
  }

  async addCandidate(candidate) {
    try {
      // null = end of candidates for the current generation
      await this.pc.addIceCandidate(candidate ?? undefined);
    } catch (err) {
      if (!this.ignoreOffer) this.controller.log(`addIceCandidate from ${this.peer} failed`, err);
    }
  }

  // --- media and connection state --------------------------------------------------------
  onTrack(event) {
    // One stream per sender page: its audio and video tracks arrive as two "track" events
    // on the same MediaStream. Only a *different* stream is reported, so the page sets
    // srcObject once (resetting it would abort a pending play()).
    let stream = event.streams[0];
    if (!stream) {
      this.fallbackStream ??= new MediaStream();
      this.fallbackStream.addTrack(event.track);
      stream = this.fallbackStream;
    }
    if (stream !== this.stream) {
      this.stream = stream;
      this.controller.emit("stream", { peer: this.peer, stream });
    }
  }

  onConnectionState() {
    const state = this.pc.connectionState;
    clearTimeout(this.disconnectTimer);
    if (state === "connected") {
      this.connectedAt ??= performance.now();
      this.problem = "";
    } else if (state === "failed") {
      this.problem = "connection failed; restarting ICE";
      this.restartIce();
    } else if (state === "disconnected") {
      this.disconnectTimer = this.later(() => {
        if (this.pc.connectionState === "disconnected") this.restartIce();
      }, this.controller.options.disconnectedRestartMs);
    }
    this.emitState();
  }

  checkConnected() {
    if (this.pc.connectionState === "connected") return;
    const errors = this.iceErrors.map((e) => `${e.code} ${e.text} (${e.url})`);
    const unique = [...new Set(errors)].slice(-3);
    this.problem = unique.length
      ? `no connection after ${this.controller.options.connectTimeoutMs / 1000} s: ${unique.join("; ")}`
      : `no connection after ${this.controller.options.connectTimeoutMs / 1000} s (no network path found)`;
    this.emitState();
  }

  restartIce() {
    if (this.closed) return;
    this.restarts += 1;
    this.restartPending = true;
    this.pc.restartIce(); // fires negotiationneeded → offer with fresh ICE credentials
    this.later(() => this.checkConnected(), this.controller.options.connectTimeoutMs);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    clearTimeout(this.disconnectTimer);
    this.pc.close();
  }
}

export class MeshController extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.selfId        our peer id (from welcome)
   * @param {(msg: object) => void} opts.send  sends a message on the room socket
   * @param {RTCIceServer[]} [opts.iceServers]
   * @param {MediaStream|null} [opts.localStream]
   * @param {"all"|"relay"} [opts.iceTransportPolicy]
   */
  constructor({ selfId, send, iceServers = [], localStream = null, iceTransportPolicy = "all", ...options }) {
    super();
    this.selfId = selfId;
    this.sendMessage = send;
    this.iceServers = iceServers;
    this.iceTransportPolicy = iceTransportPolicy;
    this.localStream = localStream;
    this.options = { ...DEFAULTS, ...options };
    this.links = new Map(); // peer id -> PeerLink
    this.earlyCandidates = new Map(); // peer id -> candidates that came before its link
    this.closed = false;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  log(message, err) {
    console.warn(`mesh: ${message}:`, err);
  }

  send(message) {
    if (!this.closed) this.sendMessage(message);
  }

  /** Start (or return) the link to `peer`. `initiator`: we offer first (we are the newcomer). */
  addPeer(peer, { initiator = false } = {}) {
    if (this.closed || peer === this.selfId) return null;
    let link = this.links.get(peer);
    if (!link) {
      link = new PeerLink(this, peer, { initiator });
      link.pendingCandidates.push(...(this.earlyCandidates.get(peer) ?? []));
      this.earlyCandidates.delete(peer);
      this.links.set(peer, link);
      link.emitState();
    }
    return link;
  }

  removePeer(peer) {
    this.earlyCandidates.delete(peer);
    const link = this.links.get(peer);
    if (!link) return;
    this.links.delete(peer);
    link.close();
    this.emit("removed", { peer });
  }

  /** An `offer`, `answer` or `candidate` from the room socket (`from` stamped by the server). */
  async handleSignal(msg) {
    if (this.closed || typeof msg.from !== "string") return;
    let link = this.links.get(msg.from);
    if (!link && msg.type === "candidate") {
      // Before any link to its sender exists: keep it (a few) for the link to come.
      const early = this.earlyCandidates.get(msg.from) ?? [];
      if (early.length < 64 && this.earlyCandidates.size < 16) early.push(msg.candidate);
      this.earlyCandidates.set(msg.from, early);
      return;
    }
    // An offer can outrun the peer-joined that announces its sender: start the link now.
    if (!link && msg.type === "offer") link = this.addPeer(msg.from);
    if (!link) return; // a stale answer for a link we already closed
    if (msg.type === "candidate") await link.handleCandidate(msg.candidate);
    else await link.handleDescription(msg.type, msg.sdp, Boolean(msg.restart));
  }

  restartIce(peer) {
    this.links.get(peer)?.restartIce();
  }

  close() {
    this.closed = true;
    for (const peer of [...this.links.keys()]) this.removePeer(peer);
  }
}
