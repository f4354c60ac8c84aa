// Publisher page: camera preview, start/stop and upload health; the upload itself is
// publisher.js (reusable for any MediaStream).

import { describeMediaError, openLocalMedia } from "./local-media.js";
import { PUBLISH_VIDEO, StreamPublisher } from "./publisher.js";
import { keepFormsLocal } from "./forms.js";
import { uploadHealth } from "./upload-health.js";

keepFormsLocal();

const root = document.getElementById("publisher");
const $ = (id) => document.getElementById(id);
const ui = {
  key: $("publish-key"), transport: $("transport"), timeslice: $("timeslice"),
  start: $("start"), stop: $("stop"), preview: $("preview"), error: $("pub-error"),
  status: $("stream-status"),
};
const showHealth = uploadHealth("pub-");

function render(pub) {
  root.dataset.pubState = pub.state;
  showHealth(pub);
  if (pub.captureMs) root.dataset.captureMs = String(pub.captureMs);
}

let media = null;
async function preview() {
  const { stream, error } = await openLocalMedia({ video: PUBLISH_VIDEO });
  media = stream;
  ui.preview.srcObject = stream;
  if (error) ui.error.textContent = `${stream ? "not everything is shared" : "camera"}: ${describeMediaError(error)}`;
}

let publisher = null;
async function start() {
  if (!media) await preview();
  if (!media) return;
  publisher = new StreamPublisher({
    key: ui.key.value.trim(),
    ingestUrl: root.dataset.ingestUrl,
    stopUrl: root.dataset.stopUrl,
    wsPath: root.dataset.wsPath,
    transport: ui.transport.value,
    // The field starts at the stream's chunk (100 ms for low-latency streams); an empty or
    // invalid entry falls back to that.
    timeslice: Number(ui.timeslice.value) || Number(ui.timeslice.defaultValue) || 250,
    onUpdate: render,
  });
  window.rtcPublisher = publisher; // for tests and debugging
  ui.start.disabled = true;
  if (await publisher.start(media)) {
    ui.stop.disabled = false;
  } else if (publisher.state === "failed" || !publisher.key) {
    ui.start.disabled = false;
  }
}

async function stop() {
  ui.stop.disabled = true;
  const reply = await publisher.stop();
  if (reply && reply.state) ui.status.textContent = reply.state;
  ui.start.disabled = true; // a stream goes live once; create a new one to publish again
}

ui.start.addEventListener("click", () => start());
ui.stop.addEventListener("click", () => stop());
// Start is disabled in the HTML until this module runs: a click before it would be lost.
ui.start.disabled = false;
preview();
