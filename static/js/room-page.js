// What every room page does: join the room socket, list who is here, show why a join was
// refused. Media features (mesh.js, …) listen to the same socket through `page.socket`.
//
// RoomPage is an EventTarget: "connection" (detail: the socket's state, close code and
// `retrying`) follows every socket state change once RoomPage has decided whether it
// retries, so a listener never depends on the order listeners were added in.
import { CloseCode } from "./close-codes.js";
import { RtcSocket, SERVICE_RECONNECTING, showStatus } from "./socket.js";

// Error codes that end a join for good; the socket closes with a final close code after.
const REFUSALS = new Set(["room-full", "room-closed", "not-found", "wrong-path"]);

// Close codes after which "Try again" cannot help (a full room may have room later).
const GONE_FOR_GOOD = new Set([CloseCode.NOT_FOUND, CloseCode.FORBIDDEN, CloseCode.PROTOCOL_VERSION, CloseCode.WRONG_PATH]);

/** Show ``text`` in ``element``, hidden when empty (banners, media errors). */
export function showNotice(element, text) {
  if (!element) return;
  element.textContent = text;
  element.hidden = !text;
}

export class RoomPage extends EventTarget {
  constructor(root = document.querySelector("[data-room]")) {
    super();
    this.root = root;
    this.slug = root.dataset.room;
    this.list = document.getElementById("participants");
    this.count = document.getElementById("participant-count");
    this.banner = document.getElementById("room-banner");
    this.people = new Map(); // peer id -> {name, user, you, media}
    this.you = null;
    this.heartbeatMs = 10000;
    this.wasJoined = false; // in the room since the last welcome (not left on purpose)
    this.retrying = false; // waiting to try again after a room-full on reconnect
    this.retryUntil = 0;
    this.retryDelayMs = 1000;
    this.chain = Promise.resolve(); // socket messages handled one at a time (serial)
    // data-ws-path: /ws/media/<slug>/ for echo and relay rooms (routed to media processes).
    this.socket = new RtcSocket(root.dataset.wsPath || `/ws/rooms/${this.slug}/`);
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
    // The room service came back: everyone in the room now (we are not listed). Who is gone
    // is dropped, who is new is added (mesh-page.js links to them).
    this.socket.on("peers", (msg) => {
      for (const peer of [...this.people.keys()]) {
        if (!this.people.get(peer).you) this.people.delete(peer);
      }
      for (const peer of msg.peers) {
        this.people.set(peer.peer, { name: peer.name, user: peer.user, media: peer.media });
      }
      this.render();
    });
    // The room service (Redis) is away: the socket stays open, signaling waits.
    this.socket.on("service", (msg) => {
      this.root.dataset.service = msg.state;
      if (msg.state === "reconnecting") this.showBanner(SERVICE_RECONNECTING);
      else if (this.banner?.textContent === SERVICE_RECONNECTING) this.showBanner("");
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
    this.socket.addEventListener("state", (event) => this.onState(event.detail));
    window.addEventListener("pagehide", () => this.socket.close());
  }

  onWelcome(msg) {
    this.you = msg.you;
    this.wasJoined = true;
    this.retrying = false;
    this.retryUntil = 0;
    this.retryDelayMs = 1000;
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
    // If this socket drops, the reconnect asks the server to release our old place at
    // once (same identity only) instead of waiting for it to expire.
    this.socket.params = { resume: msg.you.peer };
    this.render();
  }

  // A reconnect after a dropped connection can find the room "full" of our own previous
  // connection: the server only forgets it when its heartbeat expires (about three
  // heartbeat intervals). RtcSocket treats ROOM_FULL as final; when we were in the room a
  // moment ago, keep trying (with backoff) until that ghost must have expired.
  onState(detail) {
    this.retrying = this.retryIfGhost(detail);
    this.dispatchEvent(new CustomEvent("connection", { detail: { ...detail, retrying: this.retrying } }));
  }

  retryIfGhost({ state, code }) {
    if (state !== "open") this.root.dataset.joined = "false";
    if (state !== "closed" || code !== CloseCode.ROOM_FULL || !this.wasJoined) return false;
    this.retryUntil ||= Date.now() + 3 * this.heartbeatMs + 5000;
    if (Date.now() >= this.retryUntil) {
      this.wasJoined = false; // really full: give up, the banner says why
      return false;
    }
    const delay = this.retryDelayMs;
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, 8000);
    this.showBanner(
      `Reconnecting: the room still counts your previous connection. Trying again in ${Math.round(delay / 1000)} s…`,
    );
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.socket.connect(), delay);
    return true;
  }

  /** ``handler`` wrapped to run after every message handled before it (a promise chain). */
  serial(handler) {
    return (msg) => {
      this.chain = this.chain.then(() => handler(msg)).catch((err) => console.error("room page:", err));
      return this.chain;
    };
  }

  // The heartbeat interval is only known from `welcome` (pings are the heartbeat).
  setHeartbeat(ms) {
    if (!(ms > 0)) return;
    this.heartbeatMs = ms;
    this.socket.setPingInterval(ms);
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
    this.wasJoined = false;
    this.retrying = false;
    clearTimeout(this.retryTimer);
    this.people.clear();
    this.root.dataset.joined = "false";
    this.render();
  }

  showBanner(text) {
    showNotice(this.banner, text);
  }

  connect() {
    this.socket.connect();
    return this;
  }
}

/**
 * The Leave and Rejoin buttons of a room page with media (mesh and server rooms), and what
 * the page shows when its socket closes: after Leave, "You left" once the old socket is
 * really closed (a rejoin before that would race it); while RoomPage retries, keep the
 * camera; refused or gone for good, release the camera and offer "Try again" where it may
 * help. The page says how to drop its connections (`teardown`) and camera (`stopMedia`),
 * how to show a status line, and what else Rejoin starts (`onRejoin`). It follows the
 * room's "connection" events (which carry RoomPage's retry decision), in the room's
 * message order.
 */
export class LeaveRejoin {
  constructor(room, { leave, rejoin, teardown, stopMedia, status, onRejoin = () => {} }) {
    this.room = room;
    this.leaveButton = leave;
    this.rejoinButton = rejoin;
    this.teardown = teardown;
    this.stopMedia = stopMedia;
    this.status = status;
    this.leaving = false; // the user pressed Leave: a closed socket is expected
    room.addEventListener("connection", ({ detail }) => {
      if (detail.state !== "open") room.serial(() => this.onClosed(detail))();
    });
    leave.addEventListener("click", room.serial(() => this.leave()));
    rejoin.addEventListener("click", () => {
      rejoin.hidden = true;
      status("Joining…");
      room.socket.connect();
      onRejoin();
    });
  }

  /** In the room (welcome handled): Leave works again. */
  joined() {
    this.leaveButton.disabled = false;
    this.rejoinButton.hidden = true;
  }

  leave() {
    const socket = this.room.socket;
    // Between two reconnection attempts there is no socket whose close we could wait for.
    const connected = socket.state === "open" || socket.state === "connecting";
    this.leaving = connected;
    this.leaveButton.disabled = true;
    socket.send({ type: "leave" });
    socket.close();
    this.teardown();
    this.stopMedia();
    this.room.clear();
    if (!connected) this.showLeft();
  }

  showLeft() {
    this.rejoinButton.textContent = "Rejoin";
    this.rejoinButton.hidden = false;
    this.status("You left the room.");
  }

  onClosed({ state, code, retrying }) {
    if (this.leaving) {
      if (state === "closed") {
        this.leaving = false;
        this.showLeft();
      }
      return;
    }
    this.teardown();
    if (state === "closed" && retrying) {
      this.status("Reconnecting…"); // keep the camera: we expect to be back shortly
    } else if (state === "closed") {
      this.stopMedia(); // final: refused (full, closed, gone) — release the camera
      this.status(code === CloseCode.ROOM_FULL ? "The room is full." : "Disconnected.");
      this.leaveButton.disabled = true;
      // Full: someone may leave soon. Closed room, no such room, old page, wrong path: no point.
      if (!GONE_FOR_GOOD.has(code)) {
        this.rejoinButton.textContent = "Try again";
        this.rejoinButton.hidden = false;
      }
    } else if (state === "reconnecting") {
      this.status("Connection lost, reconnecting…");
    }
  }
}
