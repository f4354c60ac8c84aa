// Mesh room page: local preview, one tile per remote peer, mute/camera/leave/rejoin.
//
// The room socket (RoomPage) carries presence and signaling; MeshController (mesh.js) owns
// the RTCPeerConnections; this module turns both into DOM. Socket messages are handled
// one at a time, in order (a promise chain), so an offer is never processed before the
// welcome that created its link; signaling messages are only handed to the mesh there
// (each link then works through its own messages without waiting for the others). The
// camera opens while the socket connects and the mesh does not wait for it: the links are
// negotiated at once and the tracks attached when the camera is up (mesh.js). A refused
// visitor (room full) has the camera released at once.
//
// Test hooks: tiles carry data-peer / data-state / data-audio / data-video / data-kbps,
// and window.rtcMesh.peers() returns per-link figures from getStats().
import { describeMediaError, openLocalMedia } from "./local-media.js";
import { MeshController } from "./mesh.js";
import { LeaveRejoin, RoomPage, showNotice } from "./room-page.js";
import { StatsSampler, drawSparkline, formatKbps } from "./stats.js";

const STATS_INTERVAL_MS = 1000;
const STATE_LABELS = {
  new: "waiting",
  connecting: "connecting…",
  connected: "connected",
  disconnected: "reconnecting…",
  failed: "failed, restarting",
  closed: "closed",
};

const room = new RoomPage();
const socket = room.socket;
const $ = (id) => document.getElementById(id);
const el = {
  tiles: $("tiles"),
  template: $("tile-template"),
  localTile: $("local-tile"),
  localVideo: $("local-video"),
  localMedia: $("local-tile").querySelector(".tile-media"),
  audio: $("toggle-audio"),
  video: $("toggle-video"),
  leave: $("leave"),
  rejoin: $("rejoin"),
  status: $("mesh-status"),
  mediaError: $("media-error"),
};
let localStream = null; // null: no camera/mic (we still receive)
let mesh = null;
// One DTLS certificate for all of this page's connections, made while the page loads
// (each RTCPeerConnection would otherwise make its own before its first offer/answer).
let certificates = null;
RTCPeerConnection.generateCertificate?.({ name: "ECDSA", namedCurve: "P-256" })
  .then((cert) => {
    certificates = [cert];
  })
  .catch(() => {}); // each connection makes its own
const tiles = new Map(); // peer id -> tile record

const serial = (handler) => room.serial(handler); // socket messages, one at a time

// --- local media ------------------------------------------------------------------------
const showMediaError = (text) => showNotice(el.mediaError, text);

// One opening at a time: the page starts it at load (and on Rejoin); the mesh gets its
// tracks when it ends (welcome does not wait for it).
let mediaOpening = null;
let mediaGeneration = 0; // bumped by stopMedia: an opening that finishes later is dropped
function acquireMedia() {
  if (!mediaOpening || mediaOpening.generation !== mediaGeneration) {
    const opening = openMedia().finally(() => {
      if (mediaOpening === opening) mediaOpening = null;
    });
    opening.generation = mediaGeneration;
    mediaOpening = opening;
  }
  return mediaOpening;
}

async function openMedia() {
  if (localStream && localStream.getTracks().some((t) => t.readyState === "live")) return;
  localStream = null;
  const generation = mediaGeneration;
  if (!navigator.mediaDevices?.getUserMedia) {
    showMediaError(`You joined without camera or microphone: ${describeMediaError(null)}. You can still see and hear the others; they cannot see or hear you.`);
    return;
  }
  const opened = await openLocalMedia();
  if (generation !== mediaGeneration) {
    for (const track of opened.stream?.getTracks() ?? []) track.stop(); // left meanwhile
    return;
  }
  localStream = opened.stream;
  const firstError = opened.error;
  if (!localStream) {
    showMediaError(`You joined without camera or microphone: ${describeMediaError(firstError)}. You can still see and hear the others; they cannot see or hear you.`);
  } else if (firstError) {
    const missing = localStream.getAudioTracks().length ? "camera" : "microphone";
    showMediaError(`Your ${missing} is not shared: ${describeMediaError(firstError)}.`);
  } else {
    showMediaError("");
  }
  if (el.localVideo.srcObject !== localStream) el.localVideo.srcObject = localStream;
  renderLocal();
}

function stopMedia() {
  mediaGeneration += 1;
  for (const track of localStream?.getTracks() ?? []) track.stop();
  localStream = null;
  el.localVideo.srcObject = null;
  renderLocal();
}

function trackOf(kind) {
  return localStream?.getTracks().find((t) => t.kind === kind) ?? null;
}

function mediaState() {
  return { audio: Boolean(trackOf("audio")?.enabled), video: Boolean(trackOf("video")?.enabled) };
}

function renderLocal() {
  const { audio, video } = mediaState();
  el.localTile.dataset.audio = String(audio);
  el.localTile.dataset.video = String(video);
  el.localMedia.textContent = describeMedia({ audio, video }, { audio: !trackOf("audio"), video: !trackOf("video") });
  const inRoom = Boolean(mesh);
  for (const [button, kind, on, off] of [
    [el.audio, "audio", "Mute", "Unmute"],
    [el.video, "video", "Stop camera", "Start camera"],
  ]) {
    const track = trackOf(kind);
    button.disabled = !track || !inRoom;
    button.setAttribute("aria-pressed", String(Boolean(track && !track.enabled)));
    button.textContent = track && !track.enabled ? off : on;
  }
}

function toggle(kind) {
  const track = trackOf(kind);
  if (!track) return;
  track.enabled = !track.enabled; // keeps the sender: no renegotiation, black/silent frames
  renderLocal();
  socket.send({ type: "media", ...mediaState() });
}

function describeMedia(media, absent = {}) {
  if (!media) return "";
  const parts = [];
  if (absent.audio) parts.push("no mic");
  else if (media.audio === false) parts.push("muted");
  if (absent.video) parts.push("no camera");
  else if (media.video === false) parts.push("camera off");
  return parts.join(" · ");
}

// --- tiles ------------------------------------------------------------------------------
function ensureTile(peer) {
  let tile = tiles.get(peer);
  if (tile) return tile;
  const node = el.template.content.firstElementChild.cloneNode(true);
  node.dataset.peer = peer;
  tile = {
    peer,
    node,
    video: node.querySelector("video"),
    name: node.querySelector(".tile-name"),
    state: node.querySelector(".tile-state"),
    media: node.querySelector(".tile-media"),
    bitrate: node.querySelector(".tile-bitrate"),
    spark: node.querySelector(".sparkline"),
    problem: node.querySelector(".tile-problem"),
    unmute: node.querySelector(".unmute"),
    link: null,
    sampler: null,
    stats: null,
  };
  tile.video.dataset.peer = peer;
  tile.unmute.addEventListener("click", () => {
    tile.video.muted = false;
    tile.unmute.hidden = true;
    tile.video.play().catch(() => {});
  });
  tiles.set(peer, tile);
  el.tiles.append(node);
  renderTile(tile);
  return tile;
}

function renderTile(tile) {
  const person = room.people.get(tile.peer);
  tile.name.textContent = room.nameOf(tile.peer);
  const media = person?.media;
  tile.node.dataset.audio = String(media?.audio !== false);
  tile.node.dataset.video = String(media?.video !== false);
  tile.media.textContent = describeMedia(media);
}

function setTileState(tile, state, problem) {
  tile.node.dataset.state = state;
  tile.state.textContent = STATE_LABELS[state] ?? state;
  tile.problem.textContent = problem || "";
  tile.problem.hidden = !problem;
  renderStatus();
}

function removeTile(peer) {
  const tile = tiles.get(peer);
  if (!tile) return;
  tiles.delete(peer);
  tile.video.srcObject = null;
  tile.node.remove();
  renderStatus();
}

function attachStream(tile, stream) {
  if (tile.video.srcObject === stream) return; // resetting it would abort play()
  tile.video.srcObject = stream;
  tile.video.play().catch((err) => {
    if (err.name !== "NotAllowedError") return; // AbortError: a newer stream took over
    // Autoplay with sound refused (no user gesture yet): play muted, offer to unmute.
    tile.video.muted = true;
    tile.unmute.hidden = false;
    tile.video.play().catch(() => {});
  });
}

function renderStats(tile, sample) {
  tile.stats = sample;
  tile.node.dataset.kbps = String(Math.round(sample.kbps));
  tile.node.dataset.frames = String(sample.framesDecoded);
  const size = sample.width ? ` · ${sample.width}×${sample.height} · ${Math.round(sample.fps)} fps` : "";
  const path = sample.candidateType ? ` · ${sample.candidateType}` : "";
  tile.bitrate.textContent = `${formatKbps(sample.kbps)}${size}${path}`;
  drawSparkline(tile.spark, tile.sampler.history);
}

async function sampleStats() {
  if (!mesh) return;
  for (const [peer, link] of mesh.links) {
    const tile = tiles.get(peer);
    if (!tile || link.closed) continue;
    if (tile.link !== link) {
      tile.link = link;
      tile.sampler = new StatsSampler();
    }
    try {
      renderStats(tile, await tile.sampler.sample(link.pc));
    } catch (err) {
      if (!link.closed) console.warn("mesh: getStats failed", err);
    }
  }
}
setInterval(sampleStats, STATS_INTERVAL_MS);

function renderStatus(text) {
  if (text !== undefined) {
    el.status.textContent = text;
    return;
  }
  if (!mesh) return;
  const links = [...mesh.links.values()];
  const connected = links.filter((l) => l.state === "connected").length;
  el.status.textContent = links.length
    ? `Connected to ${connected} of ${links.length}`
    : "Waiting for others to join…";
}

// --- the mesh -----------------------------------------------------------------------------
function teardown() {
  mesh?.close();
  mesh = null;
  for (const peer of [...tiles.keys()]) removeTile(peer);
  delete room.root.dataset.mesh;
  renderLocal();
}

function startMesh(welcome) {
  mesh = new MeshController({
    selfId: welcome.you.peer,
    send: (msg) => socket.send(msg),
    iceServers: welcome.ice_servers,
    iceTransportPolicy: welcome.ice_transport_policy === "relay" ? "relay" : "all",
    localStream,
    mediaPending: !localStream, // welcome started (or joined) the opening: tracks follow
    certificates,
  });
  mesh.addEventListener("stream", ({ detail }) => attachStream(ensureTile(detail.peer), detail.stream));
  mesh.addEventListener("state", ({ detail }) => {
    const tile = tiles.get(detail.peer) ?? ensureTile(detail.peer);
    setTileState(tile, detail.state, detail.problem);
  });
  mesh.addEventListener("removed", ({ detail }) => removeTile(detail.peer));
}

socket.on(
  "welcome",
  serial((msg) => {
    teardown(); // a reconnect gets a new peer id: links to our old id are gone on both ends
    if (socket.state !== "open" || controls.leaving) return;
    const opening = acquireMedia(); // already under way (page load, Rejoin) or live
    startMesh(msg);
    const started = mesh;
    for (const peer of msg.peers) {
      ensureTile(peer.peer);
      mesh.addPeer(peer.peer, { initiator: false }); // we are the newcomer: they offer
    }
    controls.joined();
    room.root.dataset.mesh = "ready";
    renderLocal();
    renderStatus();
    opening
      .catch((err) => console.error("mesh page: camera:", err))
      .then(() => {
        if (mesh !== started) return; // left, or a reconnect made a new mesh
        mesh.setLocalStream(localStream);
        renderLocal();
        // Others show a peer without media state as sending both; only say so when not.
        const media = mediaState();
        if (!media.audio || !media.video) socket.send({ type: "media", ...media });
      });
  }),
);
socket.on(
  "peer-joined",
  serial((msg) => {
    if (!mesh) return;
    renderTile(ensureTile(msg.peer)); // its name, if a signal made the tile first
    mesh.addPeer(msg.peer, { initiator: true }); // it is the newcomer: we offer
  }),
);
socket.on(
  "peer-left",
  serial((msg) => {
    mesh?.removePeer(msg.peer);
    removeTile(msg.peer);
  }),
);
// The room service came back (docs/protocol.md, `peers`): close the links to peers that are
// gone, link to peers we had not heard of. Either side of a new pair may have missed the
// other's join, so the impolite side (smaller id) offers, as perfect negotiation expects.
socket.on(
  "peers",
  serial((msg) => {
    if (!mesh) return;
    const now = new Set(msg.peers.map((p) => p.peer));
    for (const peer of [...tiles.keys()]) {
      if (!now.has(peer)) {
        mesh.removePeer(peer);
        removeTile(peer);
      }
    }
    for (const peer of now) {
      renderTile(ensureTile(peer));
      if (!mesh.links.has(peer)) mesh.addPeer(peer, { initiator: room.you.peer < peer });
    }
  }),
);
socket.on(
  "peer-media",
  serial((msg) => {
    const tile = tiles.get(msg.peer);
    if (tile) renderTile(tile);
  }),
);
for (const type of ["offer", "answer", "candidate"]) {
  // handed over in order, not awaited: each link handles its own messages in turn
  socket.on(
    type,
    serial((msg) => {
      mesh?.handleSignal(msg);
    }),
  );
}
socket.on("error", (msg) => {
  if (msg.code === "unknown-peer" || msg.code === "bad-message" || msg.code === "rate-limited") {
    console.warn(`mesh: server said ${msg.code}: ${msg.message}`, msg.ref ?? "");
  }
});

// --- controls -----------------------------------------------------------------------------
el.audio.addEventListener("click", () => toggle("audio"));
el.video.addEventListener("click", () => toggle("video"));
const controls = new LeaveRejoin(room, {
  leave: el.leave,
  rejoin: el.rejoin,
  teardown,
  stopMedia,
  status: renderStatus,
  onRejoin: acquireMedia, // in parallel with the socket; the mesh takes its tracks when it ends
});
window.addEventListener("pagehide", () => {
  mesh?.close();
  stopMedia();
});

// --- test and debugging hook --------------------------------------------------------------
window.rtcMesh = {
  get selfId() {
    return room.you?.peer ?? null;
  },
  get controller() {
    return mesh;
  },
  peers() {
    return [...tiles.values()].map((tile) => {
      const link = mesh?.links.get(tile.peer);
      return {
        peer: tile.peer,
        name: room.nameOf(tile.peer),
        state: link?.state ?? "closed",
        polite: link?.polite ?? null,
        restarts: link?.restarts ?? 0,
        remoteRestarts: link?.remoteRestarts ?? 0,
        offersSent: link?.offersSent ?? 0,
        offersReceived: link?.offersReceived ?? 0,
        connectMs: link?.connectedAt != null ? link.connectedAt - link.createdAt : null,
        problem: link?.problem ?? "",
        stats: tile.stats,
        history: tile.sampler ? [...tile.sampler.history] : [],
      };
    });
  },
  restartIce(peer) {
    mesh?.restartIce(peer);
  },
};

room.connect();
acquireMedia(); // in parallel with the socket; the mesh takes its tracks when it ends
