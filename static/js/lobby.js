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

setupTabs();
const socket = new RtcSocket("/ws/lobby/");
showStatus(socket);
socket.on("hello", (msg) => { document.body.dataset.lobby = "connected"; window.rtcLobbyHello = msg; });
socket.connect();
