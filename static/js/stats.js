// Per-connection figures from RTCPeerConnection.getStats(): inbound video bitrate, frame
// rate and size, round-trip time and which kind of path ICE chose (host / srflx / relay).
// Bitrates are differences between two reports; report timestamps are in milliseconds, so
// bytes * 8 / ms is kbit/s directly.

export class StatsSampler {
  constructor(historyLength = 60) {
    this.previous = null;
    this.history = []; // inbound video kbps, oldest first
    this.historyLength = historyLength;
    this.latest = null;
  }

  async sample(pc) {
    const report = await pc.getStats();
    let video = null;
    let audio = null;
    let transport = null;
    let outboundBytes = 0;
    report.forEach((entry) => {
      if (entry.type === "inbound-rtp" && entry.kind === "video") video = entry;
      else if (entry.type === "inbound-rtp" && entry.kind === "audio") audio = entry;
      else if (entry.type === "outbound-rtp") outboundBytes += entry.bytesSent ?? 0;
      else if (entry.type === "transport" && entry.selectedCandidatePairId) transport = entry;
    });
    const pair = transport ? report.get(transport.selectedCandidatePairId) : null;
    const local = pair ? report.get(pair.localCandidateId) : null;
    const now = {
      timestamp: video?.timestamp ?? performance.now(),
      videoBytes: video?.bytesReceived ?? 0,
      audioBytes: audio?.bytesReceived ?? 0,
      outboundBytes,
      framesDecoded: video?.framesDecoded ?? 0,
    };
    const prev = this.previous;
    const elapsed = prev ? now.timestamp - prev.timestamp : 0;
    const rate = (bytes, before) => (elapsed > 0 ? Math.max(0, ((bytes - before) * 8) / elapsed) : 0);
    const sample = {
      kbps: prev ? rate(now.videoBytes, prev.videoBytes) : 0, // inbound video
      audioKbps: prev ? rate(now.audioBytes, prev.audioBytes) : 0,
      outboundKbps: prev ? rate(now.outboundBytes, prev.outboundBytes) : 0,
      fps: prev && elapsed > 0 ? ((now.framesDecoded - prev.framesDecoded) * 1000) / elapsed : 0,
      framesDecoded: now.framesDecoded,
      bytesReceived: now.videoBytes,
      width: video?.frameWidth ?? 0,
      height: video?.frameHeight ?? 0,
      packetsLost: video?.packetsLost ?? 0,
      rttMs: pair?.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null,
      candidateType: local?.candidateType ?? null, // "relay" when going through TURN
    };
    this.previous = now;
    if (prev) {
      this.history.push(sample.kbps);
      if (this.history.length > this.historyLength) this.history.shift();
    }
    this.latest = sample;
    return sample;
  }
}

// A small line chart of the last values, scaled to the largest one shown.
export function drawSparkline(canvas, values) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  if (values.length < 2) return;
  const max = Math.max(...values, 1);
  const step = width / (values.length - 1);
  ctx.beginPath();
  values.forEach((value, i) => {
    const x = i * step;
    const y = height - 1 - (value / max) * (height - 2);
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = getComputedStyle(canvas).color || "#2f6fed";
  ctx.stroke();
}

export function formatKbps(kbps) {
  if (kbps >= 1000) return `${(kbps / 1000).toFixed(1)} Mbit/s`;
  return `${Math.round(kbps)} kbit/s`;
}
