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
// without a message. To avoid collisions in the common case, the peers already in the
// room offer to a newcomer as soon as `peer-joined` tells them (at the same moment the
// newcomer gets `welcome`, so their offers are built while the newcomer's page is still
// busy starting up, and the costly halves of the set-up run on three pages at once); the
// newcomer answers, and offers itself only if no offer arrives (fallback), e.g. after a
// lost message.
//
// The camera does not hold up the connections: transceivers are negotiated `sendrecv`
// while the camera is still opening and its tracks are attached with replaceTrack when it
// arrives (no second negotiation), so ICE and DTLS run while the camera starts. If it
// never comes, the directions go back to receive-only (one renegotiation, rare path).
//
// Each link handles its signaling messages one at a time, in order (its own promise
// chain), but links do not wait for each other: one link's slow setRemoteDescription does
// not hold up another link's answer or candidates.
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
    this.chain = Promise.resolve(); // this link's signaling messages, one at a time
    this.createdAt = performance.now();
    this.connectedAt = null;
    this.closed = false;
    this.timers = new Set();
    this.pc = this.createConnection();
    // Offer now rather than on the negotiationneeded event (a task later, 10-50 ms on a
    // busy page); that event then finds the offer made and does nothing.
    if (initiator) this.makeOffer();
  }

  createConnection() {
    const { iceServers, iceTransportPolicy, certificates } = this.controller;
    const config = { iceServers, iceTransportPolicy, bundlePolicy: "max-bundle" };
    if (certificates) config.certificates = certificates;
    const pc = new RTCPeerConnection(config);

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
    if (this.initiator) this.addTransceivers(pc);
    else this.later(() => this.offerFallback(), this.controller.options.offerFallbackMs);
    return pc;
  }

  // Whoever offers first puts one audio and one video section in the offer: sendrecv with
  // our track (or with none yet while the camera opens: attached later by replaceTrack),
  // recvonly when we have nothing of that kind to send (a viewer without a camera still
  // sees the others). The answering side adds nothing before the offer (see
  // adoptTransceivers): transceivers added before applying an offer would not be paired
  // with its sections and would cost a second negotiation.
  addTransceivers(pc = this.pc) {
    const kinds = new Set(pc.getTransceivers().map((t) => t.receiver.track.kind));
    for (const kind of ["audio", "video"]) {
      if (kinds.has(kind)) continue;
      const track = this.controller.trackOf(kind);
      const direction = this.controller.willSend(kind) ? "sendrecv" : "recvonly";
      pc.addTransceiver(track ?? kind, { direction, streams: [this.controller.sendStream] });
    }
  }

  // After applying an offer, before answering: send on the sections the offer created,
  // with our track if we have it, else with the track to come (camera still opening).
  adoptTransceivers() {
    for (const t of this.pc.getTransceivers()) {
      if (t.stopped || t.mid === null || t.sender.track) continue;
      const kind = t.receiver.track.kind;
      if (!this.controller.willSend(kind)) continue;
      if (t.direction !== "sendrecv") {
        t.direction = "sendrecv";
        t.sender.setStreams?.(this.controller.sendStream);
      }
      const track = this.controller.trackOf(kind);
      if (track) t.sender.replaceTrack(track).catch((err) => this.controller.log("replaceTrack", err));
    }
  }

  // The camera/mic opening finished: attach what came, stop offering to send what did not.
  attachLocal() {
    for (const t of this.pc.getTransceivers()) {
      if (t.stopped || t.sender.track) continue;
      const kind = t.receiver.track.kind;
      const track = this.controller.trackOf(kind);
      if (track && (t.direction === "sendrecv" || t.direction === "sendonly")) {
        t.sender.replaceTrack(track).catch((err) => this.controller.log("replaceTrack", err));
      } else if (!track && t.direction === "sendrecv") {
        t.direction = "recvonly"; // fires negotiationneeded: one more offer/answer
      }
    }
  }

  /** Run `fn` after this link's previous signaling message has been handled. */
  run(fn) {
    const next = this.chain.then(() => (this.closed ? undefined : fn()));
    this.chain = next.catch((err) => this.controller.log(`signaling with ${this.peer}`, err));
    return this.chain;
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
    // The peers already there offer to a newcomer; it answers (see offerFallback).
    if (!this.initiator && !this.pc.remoteDescription) return;
    return this.makeOffer();
  }

  offerFallback() {
    // The other's offer never came (lost, or it does not know us yet): offer ourselves.
    // If both sides end up offering, perfect negotiation sorts it out.
    if (this.pc.remoteDescription || this.makingOffer || this.pc.signalingState !== "stable") return;
    this.initiator = true;
    this.addTransceivers(); // fires negotiationneeded when it adds something
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
    if (type === "offer") {
      this.adoptTransceivers();
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
    // after the answer is on its way: queued candidates need not delay it
    await this.flushCandidates();
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
   * @param {MediaStream|null} [opts.localStream]  camera/mic, if already open
   * @param {boolean} [opts.mediaPending]  the camera/mic is still opening (setLocalStream follows)
   * @param {RTCCertificate[]} [opts.certificates]  DTLS certificate(s) shared by all links
   * @param {"all"|"relay"} [opts.iceTransportPolicy]
   */
  constructor({
    selfId,
    send,
    iceServers = [],
    localStream = null,
    mediaPending = false,
    certificates = null,
    iceTransportPolicy = "all",
    ...options
  }) {
    super();
    this.selfId = selfId;
    this.sendMessage = send;
    this.iceServers = iceServers;
    this.iceTransportPolicy = iceTransportPolicy;
    this.certificates = certificates;
    this.localStream = localStream;
    this.mediaPending = mediaPending && !localStream;
    // The stream id our tracks are announced under (a=msid): fixed before the tracks exist,
    // so a track attached later needs no renegotiation. The remote side groups our audio
    // and video by it.
    this.sendStream = new MediaStream();
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

  trackOf(kind) {
    return this.localStream?.getTracks().find((t) => t.kind === kind && t.readyState === "live") ?? null;
  }

  /** Whether we send `kind`: we have the track, or the camera/mic is still opening. */
  willSend(kind) {
    return Boolean(this.trackOf(kind)) || this.mediaPending;
  }

  /** The camera/mic opening finished (`stream` null: nothing came): attach it everywhere. */
  setLocalStream(stream) {
    this.localStream = stream;
    this.mediaPending = false;
    for (const link of this.links.values()) if (!link.closed) link.attachLocal();
  }

  /** Start (or return) the link to `peer`. `initiator`: we offer first (it is the newcomer). */
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

  /** An `offer`, `answer` or `candidate` from the room socket (`from` stamped by the server).
   * Returns when that link has handled it; callers need not wait (links run independently). */
  handleSignal(msg) {
    if (this.closed || typeof msg.from !== "string") return Promise.resolve();
    let link = this.links.get(msg.from);
    if (!link && msg.type === "candidate") {
      // Before any link to its sender exists: keep it (a few) for the link to come.
      const early = this.earlyCandidates.get(msg.from) ?? [];
      if (early.length < 64 && this.earlyCandidates.size < 16) early.push(msg.candidate);
      this.earlyCandidates.set(msg.from, early);
      return Promise.resolve();
    }
    // An offer can outrun the peer-joined or welcome that announces its sender: start the
    // link now.
    if (!link && msg.type === "offer") link = this.addPeer(msg.from);
    if (!link) return Promise.resolve(); // a stale answer for a link we already closed
    if (msg.type === "candidate") return link.run(() => link.handleCandidate(msg.candidate));
    return link.run(() => link.handleDescription(msg.type, msg.sdp, Boolean(msg.restart)));
  }

  restartIce(peer) {
    this.links.get(peer)?.restartIce();
  }

  close() {
    this.closed = true;
    for (const peer of [...this.links.keys()]) this.removePeer(peer);
  }
}
