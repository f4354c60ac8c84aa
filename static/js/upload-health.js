// The upload-health list of a publishing form (templates/streaming/_upload_health.html):
// what a publisher reports, in the elements whose ids start with ``prefix``. A chunk
// publisher (publisher.js: StreamPublisher) fills the chunk rows, a WHIP publisher (whip.js:
// WhipPublisher, ``kind === "webrtc"``) the WebRTC rows. Shared by the publisher page and
// the face page.

export function uploadHealth(prefix) {
  const $ = (name) => document.getElementById(prefix + name);
  const list = document.querySelector(`[data-testid="${prefix}upload-health"]`);
  const ui = {
    state: $("state"), sent: $("sent"), queue: $("queue"), bitrate: $("bitrate"),
    serverQueue: $("server-queue"), segments: $("segments"), error: $("error"),
    connection: $("connection"), frames: $("frames"), rtt: $("rtt"),
  };
  const show = (element, text) => { if (element) element.textContent = text; };
  return (pub) => {
    const webrtc = pub.kind === "webrtc";
    if (list) list.dataset.ingest = webrtc ? "webrtc" : "chunks";
    show(ui.state, pub.state);
    show(ui.error, pub.error || "—");
    show(ui.bitrate, pub.bitrateKbps == null ? "—" : `${pub.bitrateKbps} kbit/s`);
    if (webrtc) {
      const s = pub.stats || {};
      show(ui.connection, pub.connection || "—");
      show(ui.frames, s.framesSent == null ? "—"
        : `${s.framesSent} frames` + (s.width ? ` · ${s.width}×${s.height}` : "")
          + (s.fps ? ` · ${Math.round(s.fps)} fps` : "") + (s.codec ? ` · ${s.codec}` : ""));
      show(ui.rtt, s.rttMs == null ? "—" : `${Math.round(s.rttMs)} ms`);
      return;
    }
    show(ui.sent, String(pub.sent));
    show(ui.queue, `${pub.queue.length} chunks / ${Math.round(pub.queueBytes / 1024)} KB`);
    const reply = pub.lastReply;
    if (reply) {
      show(ui.serverQueue, `${Math.round(reply.queue_bytes / 1024)} KB / ${Math.round(reply.queue_limit / 1024)} KB`);
      show(ui.segments, String(reply.segments));
    }
  };
}
