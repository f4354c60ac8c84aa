// Echo and relay room pages: your camera goes to the server's aiortc peer, which sends
// back either your own video (echo, optionally with face boxes drawn by OpenCV) or the
// other participant's (relay).
//
// The room socket (RoomPage) carries presence and signaling; ServerLink (server-room.js)
// owns the RTCPeerConnection; this module turns both into DOM. Messages are handled one
// at a time, in order. The camera is opened only once the room has accepted us.
//
// Test hooks: the article carries data-link (connection state) and data-partner (relay:
// "present"/"none"); window.rtcServerRoom exposes the last media-stats and inbound stats.
import { describeMediaError, openLocalMedia } from "./local-media.js";
import { LeaveRejoin, RoomPage, showNotice } from "./room-page.js";
import { ServerLink } from "./server-room.js";
import { StatsSampler, formatKbps } from "./stats.js";

const STATS_INTERVAL_MS = 1000;

const room = new RoomPage();
const socket = room.socket;
const kind = room.root.dataset.kind; // "echo" | "relay"
const $ = (id) => document.getElementById(id);
const el = {
  localVideo: $("local-video"),
  serverVideo: $("server-video"),
  serverCaption: $("server-caption"),
  faces: $("faces-toggle"),
  hear: $("hear-toggle"),
  recordOption: $("record-option"),
  record: $("record-toggle"),
  serverStats: $("server-stats"),
  inboundStats: $("inbound-stats"),
  leave: $("leave"),
  rejoin: $("rejoin"),
  status: $("server-status"),
  mediaError: $("media-error"),
};

let localStream = null;
let link = null;
let lastStats = null;
const sampler = new StatsSampler();

const serial = (handler) => room.serial(handler); // socket messages, one at a time
const showMediaError = (text) => showNotice(el.mediaError, text);

function status(text) {
  el.status.textContent = text;
}

async function acquireMedia() {
  if (localStream && localStream.getTracks().some((t) => t.readyState === "live")) return;
  const { stream, error } = await openLocalMedia();
  localStream = stream;
  const lost = kind === "echo" ? "The server has nothing to send back." : "The other participant cannot see or hear you.";
  if (!stream) showMediaError(`No camera or microphone: ${describeMediaError(error)}. ${lost}`);
  else if (error) showMediaError(`Not everything is shared: ${describeMediaError(error)}.`);
  else showMediaError("");
  el.localVideo.srcObject = stream;
}

function stopMedia() {
  for (const track of localStream?.getTracks() ?? []) track.stop();
  localStream = null;
  el.localVideo.srcObject = null;
}

function attachStream(stream) {
  if (el.serverVideo.srcObject === stream) return; // resetting it would abort play()
  el.serverVideo.srcObject = stream;
  el.serverVideo.play().catch(() => {
    el.serverVideo.muted = true; // autoplay with sound refused: play muted
    if (el.hear) el.hear.checked = false;
    el.serverVideo.play().catch(() => {});
  });
}

function renderPartner() {
  if (kind !== "relay") return;
  const others = [...room.people.entries()].filter(([, person]) => !person.you);
  room.root.dataset.partner = others.length ? "present" : "none";
  el.serverCaption.textContent = others.length
    ? `${others[0][1].name} (through the server)`
    : "Waiting for someone to join…";
}

function renderServerStats(msg) {
  lastStats = msg;
  const parts = [`server ${msg.fps_in} fps in · ${msg.fps_out} fps out`];
  if (msg.faces) {
    const ms = msg.detect_ms != null ? `${msg.detect_ms} ms` : "…";
    parts.push(`detection ${ms} · ${msg.boxes.length} face${msg.boxes.length === 1 ? "" : "s"}`);
  }
  el.serverStats.textContent = parts.join(" · ");
}

function teardown() {
  link?.close();
  link = null;
  el.serverVideo.srcObject = null;
  delete room.root.dataset.link;
}

function startLink(welcome) {
  link = new ServerLink({
    send: (msg) => socket.send(msg),
    iceServers: welcome.ice_servers,
    iceTransportPolicy: welcome.ice_transport_policy === "relay" ? "relay" : "all",
    localStream,
  });
  link.addEventListener("stream", ({ detail }) => attachStream(detail.stream));
  link.addEventListener("state", ({ detail }) => {
    room.root.dataset.link = detail.state;
    const label = { connecting: "Connecting to the server…", connected: "Connected to the server.", failed: "Media connection failed." };
    status([label[detail.state] ?? detail.state, detail.problem].filter(Boolean).join(" "));
  });
  return link.start();
}

socket.on(
  "welcome",
  serial(async (msg) => {
    teardown();
    await acquireMedia();
    if (socket.state !== "open" || controls.leaving) return;
    renderPartner();
    el.recordOption.hidden = !msg.recording_available;
    el.record.checked = false;
    if (kind === "echo" && el.faces.checked) socket.send({ type: "echo-options", faces: true });
    await startLink(msg);
    controls.joined();
  }),
);
socket.on("answer", serial((msg) => link?.handleAnswer(msg)));
socket.on("server-peer", serial((msg) => link?.handleServerState(msg.state)));
socket.on("media-stats", (msg) => renderServerStats(msg));
socket.on("recording", (msg) => {
  el.record.checked = msg.on;
  if (!msg.on && msg.status) {
    const cap = { size: " (the size limit was reached)", duration: " (the time limit was reached)" };
    status(`Recording ${msg.status}: ${msg.seconds} s saved on the server${cap[msg.limit] || ""}.`);
  }
});
socket.on("peer-joined", serial(() => renderPartner()));
socket.on("peer-left", serial(() => renderPartner()));
socket.on("error", (msg) => {
  if (msg.ref) console.warn(`server room: server said ${msg.code}: ${msg.message}`);
  link?.handleError(msg);
});
// Echo rooms start muted: your own voice from the speakers would feed back into the mic.
if (el.hear) {
  el.serverVideo.muted = true;
  el.hear.addEventListener("change", () => {
    el.serverVideo.muted = !el.hear.checked;
  });
}
el.record.addEventListener("change", () => {
  socket.send({ type: "record", on: el.record.checked });
});
el.faces?.addEventListener("change", () => {
  socket.send({ type: "echo-options", faces: el.faces.checked });
});
const controls = new LeaveRejoin(room, {
  leave: el.leave,
  rejoin: el.rejoin,
  teardown,
  stopMedia,
  status,
});
window.addEventListener("pagehide", () => {
  link?.close();
  stopMedia();
});

setInterval(async () => {
  if (!link?.pc) return;
  const sample = await sampler.sample(link.pc);
  const size = sample.width ? ` · ${sample.width}×${sample.height} · ${Math.round(sample.fps)} fps` : "";
  el.inboundStats.textContent = `received ${formatKbps(sample.kbps)}${size}`;
}, STATS_INTERVAL_MS);

window.rtcServerRoom = {
  get link() {
    return link;
  },
  get serverStats() {
    return lastStats;
  },
  get inbound() {
    return sampler.latest;
  },
};

room.connect();
