// The server's clock, as seen from this page: publisher and viewers measure latency on one
// clock (the server's /streams/time/, also the DASH UTCTiming source), whatever the
// browsers' own clocks say.

const TIME_URL = "/streams/time/";

// Offset (ms) to add to Date.now() to get the server's time: the best of a few round
// trips (smallest RTT), assuming the reply was stamped half-way through.
export async function syncServerClock({ samples = 5, url = TIME_URL } = {}) {
  let best = null;
  for (let i = 0; i < samples; i += 1) {
    const t0 = Date.now();
    const response = await fetch(url, { cache: "no-store" });
    const text = await response.text();
    const t1 = Date.now();
    const server = Date.parse(text.trim());
    if (!response.ok || Number.isNaN(server)) throw new Error(`bad server time: ${text.slice(0, 60)}`);
    const rtt = t1 - t0;
    if (!best || rtt < best.rtt) best = { rtt, offset: server - (t0 + t1) / 2 };
  }
  return best;
}

export class ServerClock {
  constructor() { this.offset = 0; this.rtt = null; this.synced = false; }
  async sync(options) {
    try {
      const { offset, rtt } = await syncServerClock(options);
      Object.assign(this, { offset, rtt, synced: true });
    } catch (error) {
      console.warn("rtcsite: clock sync failed, using the local clock", error);
    }
    return this;
  }
  now() { return Date.now() + this.offset; }
}
