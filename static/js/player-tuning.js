// How the viewer page (viewer-page.js) tunes its players for a low, steady live latency:
// docs/decisions.md, "Viewer latency". A module of its own so that a measurement can serve
// a variation of it (bench/bench_stream_latency.py) while the page reads no test parameter.

export const PLAYER_TUNING = {
  // new Hls(config)
  hls: {
    liveSyncDuration: 1,
    liveMaxLatencyDuration: 4,
    // hls.js's own catch-up (and its reset of playbackRate to 1 on every timeupdate) is off:
    // the page steers hls.js on the capture clock instead (hlsTargetS).
    maxLiveSyncPlaybackRate: 1,
    lowLatencyMode: false, // no LL-HLS parts from FFmpeg's dash muxer
    backBufferLength: 30,
  },
  // Latency (s) the page steers hls.js to on the capture clock; 0: no steering.
  hlsTargetS: 2,
  // dash.js player.updateSettings(settings)
  dash: {
    streaming: {
      delay: { liveDelay: 2 },
      // Symmetric: dash.js's default catch-up maps the latency error through a sigmoid onto
      // [1+min, 1+max], so at zero error it plays at 1 + (min+max)/2; an asymmetric range
      // plays faster than 1x at the target, drains the buffer and stalls.
      liveCatchup: { enabled: true, maxDrift: 2, playbackRate: { min: -0.2, max: 0.2 } },
    },
  },
  // dash.js re-reads a live MPD at most once a second (it floors minimumUpdatePeriod at 1 s,
  // and FFmpeg writes 0 for sub-second segments), and with a SegmentTimeline it only learns
  // of a new segment from the MPD: up to a second late, which at 0.5 s segments ran its
  // buffer dry. So the page asks for the MPD every mpdRefreshS seconds; null: once per
  // segment (the page's data-segment-seconds); 0: leave it to dash.js.
  mpdRefreshS: null,
};
