// A clock drawn into video frames, for glass-to-glass latency measurements
// (bench_stream_latency.py). A classic script, injected into the pages by a Playwright init
// script: it defines window.frameClock = { BITS, drawClock, readClock, clockDelay,
// clockStream }; the site itself never serves it.
//
// Two rows of BITS blocks: the top row is the time (ms since the epoch, mod 2^BITS) in
// binary, most significant bit first, white = 1; the bottom row is its complement, so a
// frame read back mid-transition (or badly compressed) is detected and skipped.
(() => {
  const BITS = 24;
  const MARGIN = 16;

  function layout(width) {
    const block = Math.floor((width - 2 * MARGIN) / BITS);
    return { block, height: block * 2, x0: MARGIN, y0: MARGIN };
  }

  function drawClock(ctx, ms, width = ctx.canvas.width) {
    const { block, x0, y0 } = layout(width);
    const value = ms % 2 ** BITS;
    for (let i = 0; i < BITS; i += 1) {
      const bit = Math.floor(value / 2 ** (BITS - 1 - i)) % 2;
      ctx.fillStyle = bit ? "#fff" : "#000";
      ctx.fillRect(x0 + i * block, y0, block, block * 2);
      ctx.fillStyle = bit ? "#000" : "#fff";
      ctx.fillRect(x0 + i * block, y0 + block * 2, block, block * 2);
    }
  }

  // The clock value in a frame drawn on ``ctx`` (scaled to its canvas size), or null.
  function readClock(ctx, width = ctx.canvas.width) {
    const { block, x0, y0 } = layout(width);
    const { data } = ctx.getImageData(0, 0, width, y0 + block * 4 + 1);
    const luma = (x, y) => {
      const i = (Math.round(y) * width + Math.round(x)) * 4;
      return (data[i] + data[i + 1] + data[i + 2]) / 3;
    };
    let value = 0;
    for (let i = 0; i < BITS; i += 1) {
      const cx = x0 + i * block + block / 2;
      const top = luma(cx, y0 + block) > 128;
      const bottom = luma(cx, y0 + block * 3) > 128;
      if (top === bottom) return null;
      value = value * 2 + (top ? 1 : 0);
    }
    return value;
  }

  // Milliseconds from the clock value in a frame to ``nowMs`` (handles the 2^BITS wrap).
  function clockDelay(value, nowMs) {
    const mod = 2 ** BITS;
    return (((nowMs % mod) - value) % mod + mod) % mod;
  }

  // A canvas MediaStream showing the clock (plus a moving bar), with a silent audio track;
  // ``frames()`` counts the frames drawn.
  function clockStream({ width = 640, height = 480, fps = 30 } = {}) {
    const canvas = document.createElement("canvas");
    Object.assign(canvas, { width, height });
    const ctx = canvas.getContext("2d");
    let frame = 0;
    const draw = () => {
      ctx.fillStyle = "#246";
      ctx.fillRect(0, 0, width, height);
      ctx.fillStyle = "#fc3";
      ctx.fillRect((frame * 8) % width, height / 2, 40, 40);
      frame += 1;
      drawClock(ctx, Date.now(), width);
    };
    draw();
    const timer = setInterval(draw, 1000 / fps);
    const stream = canvas.captureStream(fps);
    try {
      const audio = new AudioContext();
      const destination = audio.createMediaStreamDestination();
      const gain = audio.createGain();
      gain.gain.value = 0;
      const osc = audio.createOscillator();
      osc.connect(gain).connect(destination);
      osc.start();
      stream.addTrack(destination.stream.getAudioTracks()[0]);
    } catch (error) {
      console.warn("rtcsite: no audio track for the clock stream", error);
    }
    stream.stopClock = () => clearInterval(timer);
    // Frames drawn so far: the source's real rate, for "frames shown (of how many)".
    return { stream, canvas, frames: () => frame };
  }

  window.frameClock = { BITS, drawClock, readClock, clockDelay, clockStream };
})();
