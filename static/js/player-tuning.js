// How the viewer page (viewer-page.js) tunes its players: docs/decisions.md, "Viewer latency"
// (standard mode, measured) and "Viewer latency: low-latency mode". A module of its own so
// that a measurement can serve a variation of it (bench/bench_stream_latency.py) while the
// page reads no test parameter.

export const PLAYER_TUNING = {
  // --- standard mode: whole segments (unchanged for standard streams: measured) -----------
  // new Hls(config)
  hls: {
    liveSyncDuration: 1,
    liveMaxLatencyDuration: 4,
    // hls.js's own catch-up (and its reset of playbackRate to 1 on every timeupdate) is off:
    // the page steers hls.js on the capture clock instead (hlsTargetS).
    maxLiveSyncPlaybackRate: 1,
    // Whole segments: no parts and no part-by-part blocking reloads, even when the playlist
    // has them (an LL stream watched in standard mode; hls.js then blocks only for the next
    // whole segment).
    lowLatencyMode: false,
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

  // --- standard mode on a low-latency stream ----------------------------------------------
  // Its segments are longer (STREAM_LL_SEGMENT_SECONDS, 1 s, against 0.5 s), so a player of
  // whole segments sees each frame up to half a second later than on a standard stream: the
  // measured 2 s targets plus that half second (bench stream_latency, the same stream in
  // standard mode: hls.js 2.2 s, dash.js 2.5 s).
  standardOnLowLatency: { hlsTargetS: 2.5, dashLiveDelay: 2.5 },

  // --- low-latency mode: LL-HLS parts, LL-DASH chunks ---------------------------------------
  lowLatency: {
    // new Hls(config). No liveSyncDuration(Count): hls.js then holds PART-HOLD-BACK (the
    // origin's, 3 part targets) behind the playlist's last part, which is the spec's minimum
    // and the origin's own word on how far behind parts can be relied on. (hls.js allows no
    // liveMaxLatencyDuration without liveSyncDuration, so none: it never jumps forward.)
    hls: {
      lowLatencyMode: true,
      // hls.js's own catch-up off: it speeds up only while more than 1 s is buffered ahead,
      // which held it 1.2 s from its playlist's edge (1.45 s capture latency; dash.js 0.80 s
      // in the same run, merged LL origin). The page steers it instead (hlsTargetS), as in
      // standard mode, with a smaller margin (hlsKeepAheadS); 1 also stops hls.js resetting
      // the rate to 1 on every timeupdate.
      maxLiveSyncPlaybackRate: 1,
      // Each stall moves hls.js's target back by this much (at most one target duration,
      // hls.js's cap): its default, 1 s, would double an LL target after one stall; one part
      // (0.2 s) settles on a latency the connection sustains without giving the mode up.
      liveSyncOnStallIncrease: 0.2,
      backBufferLength: 30,
    },
    // dash.js player.updateSettings(settings). Its low-latency mode is switched on by the
    // MPD (availabilityTimeComplete="false"), with the fetch loader reading chunks as the
    // origin writes them.
    dash: {
      streaming: {
        // liveDelay: dashDelayParts part targets (0.8 s at 0.2 s parts), on dash.js's clock
        // synced to the server and the MPD's availabilityStartTime on the capture clock: so
        // it is the capture-to-screen latency. A chunk is complete a part target plus the
        // ingest and encode delay (~0.3 s) after its first frame was captured: 0.8 s leaves
        // ~0.3 s of buffer, dash.js's low-latency stall threshold.
        delay: {},
        liveCatchup: {
          enabled: true,
          // The default (latency-driven, symmetric: see the standard mode's note) catch-up,
          // half the standard mode's range: at 0.2 s behind it plays ~1.05x.
          mode: "liveCatchupModeDefault",
          playbackRate: { min: -0.1, max: 0.1 },
          // More than 1.5 s behind the target (a long stall): seek to the live edge rather
          // than play fast for 15+ s.
          maxDrift: 1.5,
        },
      },
    },
    dashDelayParts: 4,
    // Capture-clock latency (s) the page steers hls.js to: up to 1.15x while behind with
    // more than hlsKeepAheadS buffered, 0.95x while ahead. Parts are served ~0.24 s after
    // capture (bench stream_latency's stages), so 0.8 s (as dash.js) leaves ~0.5 s of
    // buffer: 0.92 s p50, no stall, 1206 of 1219 frames, where 0.9 s / 0.3 s gave 1.03-1.06 s
    // with a stall in each of two runs (bench/results/stream_latency_ll_hls_target.json).
    hlsTargetS: 0.8,
    hlsKeepAheadS: 0.2,
    // hls.js allows no liveMaxLatencyDuration without liveSyncDuration: seen with an LL
    // origin, two stalls at start left it 4.4 s behind its 1.1 s target for good. So the page
    // moves hls.js to its live sync position when it is more than this far (s) behind its
    // target, at most once per hlsResyncEveryS.
    hlsResyncBehindS: 1.5,
    hlsResyncEveryS: 10,
  },

  // dash.js, every mode: the clock is synced only with our /streams/time/ (the MPD's
  // UTCTiming; viewer-page.js also makes it dash.js's fallback source, which by default is
  // an internet time server), not with the MPD response's Date header (whole seconds).
  dashClock: { streaming: { utcSynchronization: { useManifestDateHeaderTimeSource: false } } },
};
