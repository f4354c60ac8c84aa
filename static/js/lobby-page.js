// Lobby: accessible tabs that follow the URL hash, and the live lobby socket.
import { RtcSocket, showServiceBanner, showStatus } from "./socket.js";

function selectTab(key) {
  const tabs = [...document.querySelectorAll("[data-tab]")];
  if (!tabs.some((tab) => tab.dataset.tab === key)) key = tabs[0]?.dataset.tab;
  for (const tab of tabs) {
    const selected = tab.dataset.tab === key;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
  }
  for (const panel of document.querySelectorAll("[data-panel]")) {
    panel.hidden = panel.dataset.panel !== key;
  }
}

function setupTabs() {
  const tablist = document.querySelector('[role="tablist"]');
  if (!tablist) return;
  selectTab(location.hash.slice(1));
  window.addEventListener("hashchange", () => selectTab(location.hash.slice(1)));
  tablist.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
    const tabs = [...tablist.querySelectorAll("[data-tab]")];
    const index = tabs.findIndex((tab) => tab.getAttribute("aria-selected") === "true");
    const next = tabs[(index + (event.key === "ArrowRight" ? 1 : -1) + tabs.length) % tabs.length];
    location.hash = next.dataset.tab;
    next.focus();
  });
}

// --- live presence on the room cards ---------------------------------------------------
// slug -> {count, names: Map(peer id -> name), at}: the server's count, the names we know
// (the snapshot gives the first few per room, deltas the ones who come and go), and the
// time `at` of the operation that count is from. Deltas made by two server processes
// arrive in any order: a card keeps the newest (docs/protocol.md, "Lobby"), so a room
// whose count fell to 0 keeps its entry (and time) until a newer snapshot covers it.
const occupancy = new Map();
let namesPerCard = 3;
let snapshotAt = -Infinity; // the newest snapshot's time: that of every room without an entry

function room(slug) {
  if (!occupancy.has(slug)) occupancy.set(slug, { count: 0, names: new Map() });
  return occupancy.get(slug);
}

// Whether news of `slug` made at `at` is not older than what its card shows (equal: the
// same read, e.g. leaves of one expiry sweep). A server that sends no time: as it comes.
function current(slug, at) {
  return at === undefined || at >= (occupancy.get(slug)?.at ?? snapshotAt);
}

// Viewers of live streams are an audience in rooms named "stream.<slug>": counts only.
function renderStreamCard(slug) {
  const card = document.querySelector(`.room-card[data-stream="${CSS.escape(slug)}"]`);
  const count = card && card.querySelector(".viewer-count");
  if (count) count.textContent = String(occupancy.get(`stream.${slug}`)?.count || 0);
}

// A room without a card (not listed: past the lobby's 200 per kind) is only counted: new
// rooms are announced by a "room" event, which fetches the lists once.
function renderCard(slug) {
  if (slug.startsWith("stream.")) return renderStreamCard(slug.slice("stream.".length));
  const card = document.querySelector(`.room-card[data-room="${CSS.escape(slug)}"]`);
  if (!card) return;
  const { count, names } = occupancy.get(slug) || { count: 0, names: new Map() };
  const shown = [...names.values()].slice(0, namesPerCard);
  const items = shown.map((name) => {
    const item = document.createElement("li");
    item.textContent = name;
    return item;
  });
  if (count > shown.length && shown.length) {
    const more = document.createElement("li");
    more.className = "more";
    more.textContent = `and ${count - shown.length} more`;
    items.push(more);
  }
  card.querySelector(".people").replaceChildren(...items);
  card.querySelector(".count").textContent = String(count);
  const full = count >= Number(card.dataset.capacity);
  card.classList.toggle("full", full);
  card.querySelector(".full-badge").hidden = !full;
}

// A room created after this page loaded has no card yet: fetch the lobby again and swap
// in its room lists (no full reload, the socket and the current tab stay).
// A change announced while a fetch is in flight may not be in its HTML: fetch once more.
let refreshing = null;
let refreshAgain = false;
function refreshLists() {
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  refreshing = fetch(location.pathname, { credentials: "same-origin" })
    .then((response) => response.text())
    .then((html) => {
      const fresh = new DOMParser().parseFromString(html, "text/html");
      for (const list of document.querySelectorAll(".room-list")) {
        const replacement = fresh.querySelector(`[data-testid="${list.dataset.testid}"]`);
        if (replacement) list.replaceWith(replacement);
      }
      for (const slug of occupancy.keys()) renderCard(slug);
    })
    .finally(() => {
      refreshing = null;
      if (refreshAgain) {
        refreshAgain = false;
        refreshLists();
      }
    });
}

setupTabs();
const socket = new RtcSocket("/ws/lobby/");
showStatus(socket);
showServiceBanner(socket, document.getElementById("service-banner"));
socket.on("hello", (msg) => { document.body.dataset.lobby = "connected"; window.rtcLobbyHello = msg; });
let snapshots = 0;
socket.on("lobby-state", (msg) => {
  if (Number.isInteger(msg.names_per_card)) namesPerCard = msg.names_per_card;
  const slugs = new Set([...occupancy.keys(), ...Object.keys(msg.rooms)]);
  for (const slug of slugs) {
    if (!current(slug, msg.at)) continue; // a delta newer than this snapshot came first
    const state = msg.rooms[slug];
    if (!state) {
      occupancy.delete(slug);
      continue;
    }
    const people = (state.participants || []).map((p) => [p.peer, p.name]);
    occupancy.set(slug, { count: state.count, names: new Map(people), at: msg.at });
  }
  if (msg.at !== undefined) snapshotAt = Math.max(snapshotAt, msg.at);
  for (const slug of slugs) renderCard(slug);
  // reconnected (or resynced after the room service came back): rooms created while we
  // were not listening have no card yet
  if (++snapshots > 1) refreshLists();
});
socket.on("presence", (msg) => {
  if (!current(msg.room, msg.at)) return; // older than the card's count: already superseded
  const state = room(msg.room);
  state.count = msg.count;
  if (msg.at !== undefined) state.at = msg.at;
  if (msg.event === "join") state.names.set(msg.peer.peer, msg.peer.name);
  else if (msg.event === "leave") state.names.delete(msg.peer.peer);
  renderCard(msg.room);
});
// A room was created: its card is on the server's page, not on ours yet.
socket.on("room", () => refreshLists());
// A stream went live, ended or failed: fetch the lists again (status, watch links).
socket.on("stream", () => refreshLists());
socket.connect();
