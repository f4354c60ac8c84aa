// Lobby: accessible tabs that follow the URL hash, and the live lobby socket.
import { RtcSocket, showStatus } from "./socket.js";

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
const occupancy = new Map(); // slug -> Map(peer id -> name)

// Viewers of live streams are presences in rooms named "stream.<slug>".
function renderStreamCard(slug) {
  const card = document.querySelector(`.room-card[data-stream="${CSS.escape(slug)}"]`);
  const count = card && card.querySelector(".viewer-count");
  if (count) count.textContent = String((occupancy.get(`stream.${slug}`) || new Map()).size);
  return true; // streams not listed (failed, purged) need no refresh
}

function renderCard(slug) {
  if (slug.startsWith("stream.")) return renderStreamCard(slug.slice("stream.".length));
  const card = document.querySelector(`.room-card[data-room="${CSS.escape(slug)}"]`);
  if (!card) return false;
  const people = occupancy.get(slug) || new Map();
  const list = card.querySelector(".people");
  list.replaceChildren(...[...people.values()].map((name) => {
    const item = document.createElement("li");
    item.textContent = name;
    return item;
  }));
  card.querySelector(".count").textContent = String(people.size);
  const full = people.size >= Number(card.dataset.capacity);
  card.classList.toggle("full", full);
  card.querySelector(".full-badge").hidden = !full;
  return true;
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
socket.on("hello", (msg) => { document.body.dataset.lobby = "connected"; window.rtcLobbyHello = msg; });
socket.on("lobby-state", (msg) => {
  const slugs = new Set([...occupancy.keys(), ...Object.keys(msg.rooms)]);
  occupancy.clear();
  for (const [slug, room] of Object.entries(msg.rooms)) {
    occupancy.set(slug, new Map(room.participants.map((p) => [p.peer, p.name])));
  }
  let missing = false;
  for (const slug of slugs) missing = !renderCard(slug) || missing;
  if (missing) refreshLists();
});
socket.on("presence", (msg) => {
  if (!occupancy.has(msg.room)) occupancy.set(msg.room, new Map());
  const people = occupancy.get(msg.room);
  if (msg.event === "join") people.set(msg.peer.peer, msg.peer.name);
  else people.delete(msg.peer.peer);
  if (people.size === 0) occupancy.delete(msg.room);
  if (!renderCard(msg.room)) refreshLists();
});
// A stream went live, ended or failed: fetch the lists again (status, watch links).
socket.on("stream", () => refreshLists());
socket.connect();
