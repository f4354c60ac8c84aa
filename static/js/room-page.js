// What every room page does: join the room socket, list who is here, show why a join was
// refused. Media features (mesh.js, …) listen to the same socket through `page.socket`.
import { RtcSocket, showStatus } from "./socket.js";

const REFUSALS = new Set(["room-full", "room-closed", "not-found"]);

export class RoomPage {
  constructor(root = document.querySelector("[data-room]")) {
    this.root = root;
    this.slug = root.dataset.room;
    this.list = document.getElementById("participants");
    this.count = document.getElementById("participant-count");
    this.banner = document.getElementById("room-banner");
    this.people = new Map(); // peer id -> {name, user, you, media}
    this.you = null;
    this.socket = new RtcSocket(`/ws/rooms/${this.slug}/`);
    showStatus(this.socket);
    this.socket.on("welcome", (msg) => this.onWelcome(msg));
    this.socket.on("peer-joined", (msg) => {
      this.people.set(msg.peer, { name: msg.name, user: msg.user, media: msg.media });
      this.render();
    });
    this.socket.on("peer-left", (msg) => {
      this.people.delete(msg.peer);
      this.render();
    });
    this.socket.on("peer-media", (msg) => {
      const person = this.people.get(msg.peer);
      if (person) person.media = { ...person.media, ...msg.media };
    });
    this.socket.on("error", (msg) => {
      if (REFUSALS.has(msg.code)) {
        this.root.dataset.refused = msg.code;
        this.showBanner(msg.message);
      }
    });
    this.socket.addEventListener("state", (event) => {
      if (event.detail.state !== "open") this.root.dataset.joined = "false";
    });
    window.addEventListener("pagehide", () => this.socket.close());
  }

  onWelcome(msg) {
    this.you = msg.you;
    this.people.clear();
    this.people.set(msg.you.peer, { name: msg.you.name, user: msg.you.id, you: true });
    for (const peer of msg.peers) {
      this.people.set(peer.peer, { name: peer.name, user: peer.user, media: peer.media });
    }
    this.setHeartbeat(msg.heartbeat_interval * 1000);
    this.showBanner("");
    delete this.root.dataset.refused;
    this.root.dataset.joined = "true";
    this.root.dataset.peer = msg.you.peer;
    this.render();
  }

  // The heartbeat interval is only known from `welcome`, after RtcSocket started its
  // pinger with the default: restart it at the server's pace (pings are the heartbeat).
  setHeartbeat(ms) {
    if (!(ms > 0)) return;
    const socket = this.socket;
    socket.pingIntervalMs = ms;
    clearInterval(socket.pinger);
    socket.pinger = setInterval(() => socket.send({ type: "ping", t: Date.now() }), ms);
  }

  nameOf(peer) {
    return this.people.get(peer)?.name ?? `peer ${peer.slice(0, 4)}`;
  }

  render() {
    if (!this.list) return;
    this.list.replaceChildren();
    for (const [peer, person] of this.people) {
      const item = document.createElement("li");
      item.dataset.peer = peer;
      item.textContent = person.name + (person.you ? " (you)" : "");
      this.list.append(item);
    }
    if (this.count) this.count.textContent = String(this.people.size);
  }

  /** We left on purpose: nobody is listed any more. */
  clear() {
    this.people.clear();
    this.root.dataset.joined = "false";
    this.render();
  }

  showBanner(text) {
    if (!this.banner) return;
    this.banner.textContent = text;
    this.banner.hidden = !text;
  }

  connect() {
    this.socket.connect();
    return this;
  }
}
