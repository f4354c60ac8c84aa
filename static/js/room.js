// Room page: join the room socket, list who is here, show why a join was refused.
// The media parts of each kind are added by their features.
import { RtcSocket, showStatus } from "./socket.js";

const root = document.querySelector("[data-room]");
const list = document.getElementById("participants");
const banner = document.getElementById("room-banner");
const people = new Map(); // peer id -> {name, user, you}

function render() {
  list.replaceChildren();
  for (const [peer, person] of people) {
    const item = document.createElement("li");
    item.dataset.peer = peer;
    item.textContent = person.name + (person.you ? " (you)" : "");
    list.append(item);
  }
  document.getElementById("participant-count").textContent = String(people.size);
}

function showBanner(text) {
  banner.textContent = text;
  banner.hidden = !text;
}

const socket = new RtcSocket(`/ws/rooms/${root.dataset.room}/`);
showStatus(socket);
socket.on("welcome", (msg) => {
  people.clear();
  people.set(msg.you.peer, { name: msg.you.name, user: msg.you.id, you: true });
  for (const peer of msg.peers) people.set(peer.peer, { name: peer.name, user: peer.user });
  socket.pingIntervalMs = msg.heartbeat_interval * 1000;
  showBanner("");
  root.dataset.joined = "true";
  render();
});
socket.on("peer-joined", (msg) => { people.set(msg.peer, { name: msg.name, user: msg.user }); render(); });
socket.on("peer-left", (msg) => { people.delete(msg.peer); render(); });
socket.on("error", (msg) => {
  if (msg.code === "room-full" || msg.code === "room-closed" || msg.code === "not-found") {
    root.dataset.refused = msg.code;
    showBanner(msg.message);
  }
});
socket.addEventListener("state", (event) => {
  if (event.detail.state !== "open") root.dataset.joined = "false";
});
window.addEventListener("pagehide", () => socket.close());
socket.connect();
