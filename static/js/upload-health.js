// The upload-health list of a publishing form (templates/streaming/_upload_health.html):
// what a StreamPublisher (publisher.js) reports, in the elements whose ids start with
// ``prefix``. Shared by the publisher page and the face page.

export function uploadHealth(prefix) {
  const $ = (name) => document.getElementById(prefix + name);
  const ui = {
    state: $("state"), sent: $("sent"), queue: $("queue"), bitrate: $("bitrate"),
    serverQueue: $("server-queue"), segments: $("segments"), error: $("error"),
  };
  return (pub) => {
    ui.state.textContent = pub.state;
    ui.error.textContent = pub.error || "—";
    ui.sent.textContent = String(pub.sent);
    ui.queue.textContent = `${pub.queue.length} chunks / ${Math.round(pub.queueBytes / 1024)} KB`;
    ui.bitrate.textContent = pub.bitrateKbps === null ? "—" : `${pub.bitrateKbps} kbit/s`;
    const reply = pub.lastReply;
    if (reply) {
      ui.serverQueue.textContent = `${Math.round(reply.queue_bytes / 1024)} KB / ${Math.round(reply.queue_limit / 1024)} KB`;
      ui.segments.textContent = String(reply.segments);
    }
  };
}
