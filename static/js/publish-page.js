// Publisher page: camera preview, the ingest choice (HTTP chunks, WebSocket chunks, WebRTC
// over WHIP), start/stop, upload health, and the stream's status line. The uploads
// themselves are publisher.js (chunks) and whip.js (WHIP), reusable for any MediaStream.

import { describeMediaError, openLocalMedia } from "./local-media.js";
import { PUBLISH_VIDEO, StreamPublisher } from "./publisher.js";
import { WhipPublisher } from "./whip.js";
import { keepFormsLocal } from "./forms.js";
import { uploadHealth } from "./upload-health.js";

keepFormsLocal();

const root = document.getElementById("publisher");
const $ = (id) => document.getElementById(id);
const ui = {
  key: $("publish-key"), timeslice: $("timeslice"), chunkOptions: root.querySelector(".chunk-only"),
  start: $("start"), stop: $("stop"), preview: $("preview"), error: $("pub-error"),
  status: $("stream-status"), reason: $("stream-reason"), segments: $("pub-segments"),
};
const STATUS_LABELS = JSON.parse($("status-labels").textContent);
// While the page is open: how often it asks for the stream's status (the status line and
// the segments written, whichever way the stream is published, or by another client).
const STATUS_EVERY_MS = 2000;
const showHealth = uploadHealth("pub-");

const transport = () => root.querySelector("input[name=transport]:checked").value;

function render(pub) {
  const changed = root.dataset.pubState !== pub.state;
  root.dataset.pubState = pub.state;
  showHealth(pub);
  if (pub.captureMs) root.dataset.captureMs = String(pub.captureMs);
  if (changed) refreshStatus(); // going live or ending: say so now, not at the next poll
}

// --- the stream's status line: follows the stream, not the page --------------------------------
function showStatus(info) {
  const status = info.status;
  root.dataset.status = status;
  ui.status.textContent = STATUS_LABELS[status] || status;
  ui.status.className = `stream-status-${status}`;
  ui.reason.textContent = info.reason ? ` — ${info.reason}` : "";
  if (info.segments != null && (!publisher || publisher.kind === "webrtc" || !publisher.lastReply)) {
    ui.segments.textContent = String(info.segments);
  }
}

let statusInFlight = null;
function refreshStatus() {
  statusInFlight ??= fetch(root.dataset.statusUrl, { cache: "no-store" })
    .then((response) => (response.ok ? response.json() : null))
    .then((info) => { if (info) showStatus(info); })
    .catch(() => {}) // offline for a moment: the next poll tries again
    .finally(() => { statusInFlight = null; });
  return statusInFlight;
}

// --- camera and publishing ---------------------------------------------------------------------
let media = null;
async function preview() {
  const { stream, error } = await openLocalMedia({ video: PUBLISH_VIDEO });
  media = stream;
  ui.preview.srcObject = stream;
  if (error) ui.error.textContent = `${stream ? "not everything is shared" : "camera"}: ${describeMediaError(error)}`;
}

function showChoice() {
  ui.chunkOptions.hidden = transport() === "whip"; // WHIP sends frames, not chunks
}

let publisher = null;
async function start() {
  if (!media) await preview();
  if (!media) return;
  const kind = transport();
  publisher = kind === "whip"
    ? new WhipPublisher({ url: root.dataset.whipUrl, key: ui.key.value.trim(), onUpdate: render })
    : new StreamPublisher({
      key: ui.key.value.trim(),
      ingestUrl: root.dataset.ingestUrl,
      stopUrl: root.dataset.stopUrl,
      wsPath: root.dataset.wsPath,
      transport: kind,
      // The field starts at the stream's chunk (100 ms for low-latency streams); an empty or
      // invalid entry falls back to that.
      timeslice: Number(ui.timeslice.value) || Number(ui.timeslice.defaultValue) || 250,
      onUpdate: render,
    });
  window.rtcPublisher = publisher; // for tests and debugging
  ui.start.disabled = true;
  for (const input of root.querySelectorAll("input[name=transport]")) input.disabled = true;
  if (await publisher.start(media)) {
    ui.stop.disabled = false;
  } else if (publisher.state === "failed" || !publisher.key) {
    ui.start.disabled = false;
    for (const input of root.querySelectorAll("input[name=transport]")) input.disabled = false;
  }
}

async function stop() {
  ui.stop.disabled = true;
  await publisher.stop();
  await refreshStatus();
  ui.start.disabled = true; // a stream goes live once; create a new one to publish again
}

for (const input of root.querySelectorAll("input[name=transport]")) input.addEventListener("change", showChoice);
ui.start.addEventListener("click", () => start());
ui.stop.addEventListener("click", () => stop());
// Start is disabled in the HTML until this module runs: a click before it would be lost.
ui.start.disabled = false;
showChoice();
preview();
refreshStatus();
setInterval(refreshStatus, STATUS_EVERY_MS);
