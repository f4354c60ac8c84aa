"""Mesh connect: the 3rd page joins a mesh room -> all 6 RTCPeerConnections ``connected``.

Ours: three browser contexts (three identities) in one headless Chromium, on the real site
(Daphne, token auth, presence, the signaling consumer, ``static/js/mesh*.js``). Pages 1 and
2 join and connect once; then, each round, page 3 joins, and we time until every link of
the 3-way mesh is ``connected`` (the 1-2 pair is already up, so that is the 4 new
connections: 1->3, 2->3, 3->1, 3->2; the 1-2 pair is checked still connected and never
renegotiated). Page 3 then leaves and the next round starts. Who offers is the app's
choice (pages 1 and 2 offer to page 3 since they were made to offer on ``peer-joined``;
page 3 offered before): the per-pair breakdown (``steps_from_socket_ms``) reads the
direction from the messages and says it (``offered_by``).

Two ways of joining, alternated in every round:

* ``navigate``: ``page.goto(room)`` from ``about:blank`` (what a visitor opening the link
  does: page load, module load, socket, camera, negotiation); left by navigating away.
* ``rejoin``: the page's own "Rejoin" button after "Leave" (a warm page: no load).

Peer, in the same run and the same browser, interleaved with our rounds (so the same noise
and the same background load, pages 1 and 2 streaming to each other, hit both):

* ``in-page pair``: two RTCPeerConnections in one page, plain JS, no server, fake camera
  tracks from ``getUserMedia`` (opened once beforehand), candidates handed over directly;
  from ``createOffer`` to both ``connected``.
* ``in-page 3rd join``: three peers in one page, A-B connected first, then C offers to both:
  from C's first ``createOffer`` to the 4 new connections ``connected`` (our scenario
  without pages, sockets, server or camera start).

Clocks: every time is taken in the pages as ``performance.timeOrigin + performance.now()``
(comparable across pages of one Chromium on one machine; the run checks each page's offset
to ``Date.now()``). Timestamps come from an init script that wraps ``RTCPeerConnection``,
``WebSocket`` and ``getUserMedia`` (app code untouched). No app polling is on the measured
path: Python only waits for the end and then reads the recorded event times.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from bench.runner import result
from bench.support import (
    EMBEDDED_ENV,
    cpu_seconds,
    daphne_site,
    delete_keys,
    percentile,
    redis_env,
    redis_url,
    room_slug,
    unique_tag,
)

NAME = "mesh_connect"

TARGET_MS = 250.0  # issue 4: all 6 connections up <= 250 ms after the 3rd page's join
SEEN_IN_PAGE_MS = 45.0  # DESIGN.md: two in-page peer connections, median, this machine
SEEN_TRIVIAL_RELAY_MS = 150.0  # DESIGN.md: 3-page mesh through a trivial relay


@dataclass(frozen=True)
class Params:
    rounds: int = 10  # each round: baselines, one navigate join, one rejoin join
    warmup_rounds: int = 1  # not counted (first camera start, JIT, first TLS-less sockets…)
    settle_s: float = 0.5  # idle time after a leave / before a measurement
    wait_ms: int = 30_000  # any single wait in the browser (bounded)
    max_failed_rounds: int = 3  # per configuration, then give up on it


FULL = Params()
QUICK = Params(rounds=2, warmup_rounds=1, settle_s=0.3)

# --- in-page instrumentation (init script, every page of the mesh contexts) -----------------

INIT_SCRIPT = r"""
(() => {
  if (window.__bench) return;
  const clock = () => performance.timeOrigin + performance.now();
  const B = (window.__bench = { clock, pcs: [], sockets: [], msgs: [], gum: [] });

  const NativePC = window.RTCPeerConnection;
  class BenchPC extends NativePC {
    constructor(...args) {
      super(...args);
      const rec = { id: B.pcs.length, created: clock(), conn: [], ice: [], sld: [], srd: [] };
      B.pcs.push(rec);
      this.__bench = rec;
      this.addEventListener("connectionstatechange",
        () => rec.conn.push([clock(), this.connectionState]));
      this.addEventListener("iceconnectionstatechange",
        () => rec.ice.push([clock(), this.iceConnectionState]));
      this.addEventListener("icecandidate", (e) => {
        if (e.candidate && rec.firstCandidate == null) rec.firstCandidate = clock();
      });
    }
    async setLocalDescription(...args) {
      const start = clock();
      const result = await super.setLocalDescription(...args);
      this.__bench.sld.push([start, clock(), this.localDescription?.type]);
      return result;
    }
    async setRemoteDescription(...args) {
      const start = clock();
      const result = await super.setRemoteDescription(...args);
      this.__bench.srd.push([start, clock(), args[0]?.type]);
      return result;
    }
  }
  window.RTCPeerConnection = BenchPC;

  const NativeWS = window.WebSocket;
  const note = (dir, raw) => {
    try {
      const m = JSON.parse(raw);
      if (m.type === "ping" || m.type === "pong") return;
      B.msgs.push({ t: clock(), dir, type: m.type, to: m.to ?? null, from: m.from ?? null,
                    peer: m.peer ?? null });
    } catch (err) { /* not JSON: not ours */ }
  };
  class BenchWS extends NativeWS {
    constructor(url, protocols) {
      super(url, protocols);
      if (!String(url).includes("/ws/rooms/")) return;
      const rec = { created: clock(), open: null, closed: null };
      B.sockets.push(rec);
      this.__benchRoom = true;
      this.addEventListener("open", () => { rec.open = clock(); });
      this.addEventListener("close", () => { rec.closed = clock(); });
      this.addEventListener("message", (e) => note("in", e.data));
    }
    send(data) {
      if (this.__benchRoom) note("out", data);
      return super.send(data);
    }
  }
  window.WebSocket = BenchWS;

  const md = navigator.mediaDevices;
  if (md?.getUserMedia) {
    const gum = md.getUserMedia.bind(md);
    md.getUserMedia = async (constraints) => {
      const start = clock();
      try { return await gum(constraints); } finally { B.gum.push([start, clock()]); }
    };
  }

  // main-thread tasks over 50 ms: a message "in flight" may really be waiting for these
  B.longtasks = [];
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        B.longtasks.push([performance.timeOrigin + e.startTime, e.duration]);
      }
    }).observe({ type: "longtask", buffered: true });
  } catch (err) { /* no Long Tasks API: the list stays empty */ }
})();
"""

# n links in the mesh controller, each connected (null-safe while the module loads)
MESH_READY_JS = """(n) => {
  const c = window.rtcMesh?.controller;
  if (!c) return false;
  const links = [...c.links.values()];
  return links.length === n && links.every((l) => l.pc.connectionState === "connected");
}"""
LINK_COUNT_JS = """(n) => {
  const c = window.rtcMesh?.controller;
  return Boolean(c) && c.links.size === n;
}"""
SNAPSHOT_JS = """() => {
  const B = window.__bench;
  const c = window.rtcMesh?.controller;
  const offsets = [];
  for (let i = 0; i < 5; i++) offsets.push(B.clock() - Date.now());
  offsets.sort((a, b) => a - b);
  return {
    self: window.rtcMesh?.selfId ?? null,
    timeOrigin: performance.timeOrigin,
    now: B.clock(),
    clockMinusDateNow: offsets[2],
    links: c ? [...c.links].map(([peer, l]) => ({ peer, pc: l.pc.__bench?.id ?? null,
      state: l.pc.connectionState, offersSent: l.offersSent, offersReceived: l.offersReceived,
      restarts: l.restarts })) : [],
    pcs: B.pcs, sockets: B.sockets, msgs: B.msgs, gum: B.gum, longtasks: B.longtasks,
  };
}"""
MARK_JS = "() => { window.__bench.msgs.length = 0; window.__bench.gum.length = 0; \
return window.__bench.clock(); }"
CLICK_REJOIN_JS = """() => {
  const t = window.__bench.clock();
  document.getElementById("rejoin").click();
  return t;
}"""
REJOIN_VISIBLE_JS = "() => { const b = document.getElementById('rejoin'); \
return Boolean(b) && !b.hidden && document.getElementById('mesh-status').textContent \
=== 'You left the room.'; }"

# --- the peer: in-page peer connections, no server ------------------------------------------

BASELINE_JS = r"""
async () => {
  const clock = () => performance.timeOrigin + performance.now();
  if (!window.__baseStream) {
    window.__baseStream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 20 } },
    });
  }
  const base = window.__baseStream;
  const made = [];
  const peer = () => {
    const stream = base.clone();
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
    made.push([pc, stream]);
    return pc;
  };
  const connected = (pc) => new Promise((resolve) => {
    const check = () => { if (pc.connectionState === "connected") resolve(clock()); };
    pc.addEventListener("connectionstatechange", check);
    check();
  });
  // candidates of `from` go to `to` once `to` has its remote description
  const pipe = (from, to) => {
    const queue = [];
    let open = false;
    const add = (c) => to.addIceCandidate(c).catch(() => {});
    from.addEventListener("icecandidate", ({ candidate }) => {
      if (!candidate) return;
      if (open) add(candidate); else queue.push(candidate);
    });
    return () => { open = true; for (const c of queue.splice(0)) add(c); };
  };
  // offerer -> answerer, as the app does it (explicit createOffer for the timing origin)
  const negotiate = async (a, b) => {
    const releaseAB = pipe(a, b);
    const releaseBA = pipe(b, a);
    const offer = await a.createOffer();
    await a.setLocalDescription(offer);
    await b.setRemoteDescription(a.localDescription);
    releaseAB();
    await b.setLocalDescription();
    await a.setRemoteDescription(b.localDescription);
    releaseBA();
  };
  const timeout = (ms) => new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`in-page connect over ${ms} ms`)), ms));
  try {
    // 1) the pair
    const a = peer(), b = peer();
    const pairUp = Promise.all([connected(a), connected(b)]);
    const t0 = clock();
    await negotiate(a, b);
    const pairEnd = Math.max(...(await Promise.race([pairUp, timeout(20000)])));
    const pairMs = pairEnd - t0;
    // 2) a third joins an existing pair: A-B up first (untimed), then C -> A and C -> B
    const A = peer(), Bp = peer();
    const abUp = Promise.all([connected(A), connected(Bp)]);
    await negotiate(A, Bp);
    await Promise.race([abUp, timeout(20000)]);
    const CA = peer(), AC = peer(), CB = peer(), BC = peer();
    const meshUp = Promise.all([CA, AC, CB, BC].map(connected));
    const t1 = clock();
    await Promise.all([negotiate(CA, AC), negotiate(CB, BC)]);
    const meshEnd = Math.max(...(await Promise.race([meshUp, timeout(20000)])));
    return { pairMs, joinMs: meshEnd - t1 };
  } finally {
    for (const [pc, stream] of made) {
      pc.close();
      for (const track of stream.getTracks()) track.stop();
    }
  }
}
"""


# --- numbers --------------------------------------------------------------------------------


def first_state(changes: list[list[Any]], state: str, after: float = 0.0) -> float | None:
    """Time of the first ``state`` in a ``[[t, state], ...]`` list at or after ``after``."""
    return next((t for t, s in changes if s == state and t >= after), None)


def overlap(tasks: list[list[float]], start: float, end: float) -> float:
    """Milliseconds of ``[start, end]`` covered by long tasks ``[[t0, duration], ...]``."""
    return sum(max(0.0, min(end, t0 + d) - max(start, t0)) for t0, d in tasks)


def stats(values: list[float]) -> dict[str, float]:
    clean = [v for v in values if v is not None]
    if not clean:
        return {k: float("nan") for k in ("p50", "p90", "min", "max")}
    return {
        "p50": round(statistics.median(clean), 1),
        "p90": round(percentile(clean, 90), 1),
        "min": round(min(clean), 1),
        "max": round(max(clean), 1),
    }


def r1(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# --- the mesh pages -------------------------------------------------------------------------


class RoundFailed(RuntimeError):
    pass


class MeshRig:
    """Pages 1 and 2 in the room (connected), page 3 joining and leaving on demand."""

    def __init__(self, browser: Any, base_url: str, room_path: str, p: Params) -> None:
        self.base_url = base_url
        self.room_url = base_url + room_path
        self.p = p
        self.contexts = []
        self.pages = []
        for _ in range(3):
            context = browser.new_context()
            context.grant_permissions(["camera", "microphone"])
            context.add_init_script(INIT_SCRIPT)
            page = context.new_page()
            page.set_default_timeout(p.wait_ms)
            self.contexts.append(context)
            self.pages.append(page)
        self.pair_pcs: dict[int, int] = {}

    def close(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(Exception):
                context.close()

    def wait(self, page: Any, js: str, arg: Any = None, polling: int = 25) -> None:
        page.wait_for_function(js, arg=arg, polling=polling, timeout=self.p.wait_ms)

    def setup_pair(self) -> None:
        """Pages 1 and 2 join (each gets its session/identity on the first visit)."""
        one, two, three = self.pages
        one.goto(self.room_url)
        self.wait(one, "() => document.querySelector('[data-room]')?.dataset.mesh === 'ready'")
        two.goto(self.room_url)
        for page in (one, two):
            self.wait(page, MESH_READY_JS, 1, polling=100)
        three.goto(self.base_url + "/me/token/")  # a session (identity) before the first join
        three.goto("about:blank")
        for i, page in enumerate((one, two)):
            snap = page.evaluate(SNAPSHOT_JS)
            self.pair_pcs[i] = snap["links"][0]["pc"]

    def wait_left(self) -> None:
        for page in self.pages[:2]:
            self.wait(page, LINK_COUNT_JS, 1)

    def mark(self) -> float:
        """Reset message logs on pages 1 and 2; returns page 1's clock (round start)."""
        start = self.pages[0].evaluate(MARK_JS)
        self.pages[1].evaluate(MARK_JS)
        return start

    def wait_mesh(self) -> None:
        for page in self.pages:
            self.wait(page, MESH_READY_JS, 2)

    def join_navigate(self) -> dict[str, Any]:
        """Page 3 is on about:blank; open the room URL."""
        three = self.pages[2]
        start = self.mark()
        three.goto(self.room_url, wait_until="commit")
        self.wait_mesh()
        return self.analyse("navigate", start, origin=None)

    def leave_navigate(self) -> None:
        self.pages[2].goto("about:blank")
        self.wait_left()

    def leave_button(self) -> None:
        three = self.pages[2]
        three.get_by_test_id("leave").click()
        self.wait(three, REJOIN_VISIBLE_JS)
        self.wait_left()

    def join_rejoin(self) -> dict[str, Any]:
        """Page 3 has left with its Leave button; press Rejoin."""
        start = self.mark()
        three = self.pages[2]
        three.evaluate(MARK_JS)
        click = three.evaluate(CLICK_REJOIN_JS)
        self.wait_mesh()
        return self.analyse("rejoin", start, origin=click)

    # --- reading the recorded times ----------------------------------------------------------

    def analyse(self, mode: str, start: float, origin: float | None) -> dict[str, Any]:
        snaps = [page.evaluate(SNAPSHOT_JS) for page in self.pages]
        one, two, three = snaps
        me = three["self"]
        sockets = [s for s in three["sockets"] if s["created"] >= start - 1]
        if not sockets or not me:
            raise RoundFailed(f"{mode}: no room socket / peer id on page 3")
        sock = sockets[-1]
        msgs3 = [m for m in three["msgs"] if m["t"] >= sock["created"]]
        welcome = next((m["t"] for m in msgs3 if m["dir"] == "in" and m["type"] == "welcome"), None)
        if welcome is None:
            raise RoundFailed(f"{mode}: page 3 got no welcome")
        origin = three["timeOrigin"] if origin is None else origin

        def pc_of(snap: dict[str, Any], peer: str) -> dict[str, Any]:
            link = next((lk for lk in snap["links"] if lk["peer"] == peer), None)
            if link is None or link["pc"] is None:
                raise RoundFailed(f"{mode}: no link to {peer}")
            return snap["pcs"][link["pc"]]

        new_pcs = {
            "1->3": pc_of(one, me),
            "2->3": pc_of(two, me),
            "3->1": pc_of(three, one["self"]),
            "3->2": pc_of(three, two["self"]),
        }
        connected = {k: first_state(pc["conn"], "connected") for k, pc in new_pcs.items()}
        ice_connected = {k: first_state(pc["ice"], "connected") for k, pc in new_pcs.items()}
        if None in connected.values():
            raise RoundFailed(f"{mode}: a link never recorded 'connected': {connected}")
        end = max(connected.values())

        # the 1-2 pair stayed up on the same connection, never renegotiated
        pair_ok = True
        for i, (snap, other) in enumerate(((one, two), (two, one))):
            link = next(lk for lk in snap["links"] if lk["peer"] == other["self"])
            pair_ok &= link["pc"] == self.pair_pcs[i] and link["state"] == "connected"
            pair_ok &= not any(t >= start for t, _ in snap["pcs"][link["pc"]]["conn"])

        # signaling path: per new pair, whichever side offered (page 3, or the page already
        # there: the app changed who offers first, the bench reads it from the messages)
        out3 = [m for m in msgs3 if m["dir"] == "out"]
        # the camera opening of this join (started at page load / on Rejoin, before welcome)
        gums = [g for g in three["gum"] if g[0] >= origin - 1]
        gum_end = max((g[1] for g in gums), default=None)
        gum_start = min((g[0] for g in gums), default=None)
        zero = sock["created"]
        pairs = {k: pair_signals(three, snap, me, zero) for k, snap in ((1, one), (2, two))}
        # one hop through the server (ws send in one page -> message event in the other)
        relay_ms: dict[str, list[float]] = {"offer": [], "answer": []}
        # part of each hop during which the receiving page's main thread ran a long task
        blocked_ms: dict[str, list[float]] = {"offer": [], "answer": []}
        for k, snap in ((1, one), (2, two)):
            sig = pairs[k]
            answerer, offerer = (snap, three) if sig["offerer"] == "3" else (three, snap)
            for kind, receiver in (("offer", answerer), ("answer", offerer)):
                sent, got = sig[f"{kind}_sent"], sig[f"{kind}_received"]
                if sent and got:
                    relay_ms[kind].append(got - sent)
                    blocked_ms[kind].append(overlap(receiver["longtasks"], sent, got))
        candidates_out = sum(1 for m in out3 if m["type"] == "candidate")
        offers = sum(1 for m in out3 if m["type"] == "offer")
        offers += sum(
            1 for s in (one, two) for m in s["msgs"] if m["dir"] == "out" and m["type"] == "offer"
        )
        first_offer = min(
            (s["offer_sent"] for s in pairs.values() if s["offer_sent"]), default=None
        )
        last_answer = max(
            (s["answer_received"] for s in pairs.values() if s["answer_received"]), default=None
        )
        steps = {
            f"3-{k}": link_timeline(
                three, snap, pairs[k], new_pcs[f"3->{k}"], new_pcs[f"{k}->3"], zero
            )
            for k, snap in ((1, one), (2, two))
        }
        offerers = {
            f"3-{k}": ("page 3" if pairs[k]["offerer"] == "3" else f"page {k}") for k in pairs
        }
        return {
            "mode": mode,
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "from_origin_ms": r1(end - origin),  # navigation start, or the Rejoin click
            "from_socket_ms": r1(end - sock["created"]),
            "from_welcome_ms": r1(end - welcome),
            "socket_open_ms": r1(sock["open"] - sock["created"]) if sock["open"] else None,
            "origin_to_socket_ms": r1(sock["created"] - origin),
            "welcome_after_open_ms": r1(welcome - sock["open"]) if sock["open"] else None,
            "camera_ms": r1(gum_end - gum_start) if gum_end else None,
            # > 0: the camera was still opening when welcome came (on the path if awaited)
            "camera_after_welcome_ms": r1(gum_end - welcome) if gum_end else None,
            "welcome_to_first_offer_ms": r1(first_offer - welcome) if first_offer else None,
            "first_offer_to_last_answer_ms": (
                r1(last_answer - first_offer) if first_offer and last_answer else None
            ),
            "last_answer_to_all_connected_ms": r1(end - last_answer) if last_answer else None,
            "relay_one_way_ms": {k: [r1(v) for v in vs] for k, vs in relay_ms.items()},
            "relay_receiver_longtask_ms": {k: [r1(v) for v in vs] for k, vs in blocked_ms.items()},
            "page3_longtask_ms": r1(overlap(three["longtasks"], sock["created"], end)),
            "pages12_longtask_ms": [
                r1(overlap(s["longtasks"], sock["created"], end)) for s in (one, two)
            ],
            "ice_to_dtls_ms": {
                k: r1(connected[k] - ice_connected[k]) if ice_connected[k] else None
                for k in connected
            },
            "link_connected_ms_from_socket": {
                k: r1(t - sock["created"]) for k, t in connected.items()
            },
            "steps_from_socket_ms": {
                "welcome": r1(welcome - zero),
                "camera_start": (r1(gum_start - zero) if gum_start else None),
                "camera_open": (r1(gum_end - zero) if gum_end else None),
                **steps,
            },
            "offers_sent": offers,
            "first_offer_by": offerers,
            "page3_candidates_sent": candidates_out,
            "pair_1_2_untouched": pair_ok,
            "clock_minus_date_now_ms": [r1(s["clockMinusDateNow"]) for s in snaps],
        }


def pair_signals(
    three: dict[str, Any], other: dict[str, Any], me: str, zero: float
) -> dict[str, Any]:
    """The first offer/answer exchange between page 3 and page k (either side offering):
    who offered, and when each message left one page and reached the other."""
    peer = other["self"]

    def first(snap: dict[str, Any], direction: str, kind: str, key: str, who: str) -> float | None:
        return next(
            (
                m["t"]
                for m in snap["msgs"]
                if m["dir"] == direction and m["type"] == kind and m[key] == who and m["t"] >= zero
            ),
            None,
        )

    by3 = first(three, "out", "offer", "to", peer)
    byk = first(other, "out", "offer", "to", me)
    if by3 is not None and (byk is None or by3 <= byk):
        offerer, answerer, o_id, a_id = three, other, me, peer
    else:
        offerer, answerer, o_id, a_id = other, three, peer, me
    return {
        "offerer": "3" if offerer is three else "k",
        "peer_joined": first(other, "in", "peer-joined", "peer", me),
        "offer_sent": first(offerer, "out", "offer", "to", a_id),
        "offer_received": first(answerer, "in", "offer", "from", o_id),
        "answer_sent": first(answerer, "out", "answer", "to", o_id),
        "answer_received": first(offerer, "in", "answer", "from", a_id),
        "candidate_received_by_3": first(three, "in", "candidate", "from", peer),
    }


def link_timeline(
    three: dict[str, Any],
    other: dict[str, Any],
    sig: dict[str, Any],
    pc3: dict[str, Any],
    pc_other: dict[str, Any],
    zero: float,
) -> dict[str, Any]:
    """One new pair (page 3, page k): each step's time since page 3's socket. ``offer_*`` /
    ``answer_srd_*`` are on the offering side, ``peer_srd_*`` / ``answer_sld_done`` on the
    answering side (``offered_by`` says which page that is)."""
    offer_pc, answer_pc = (pc3, pc_other) if sig["offerer"] == "3" else (pc_other, pc3)

    def desc(pc: dict[str, Any], field: str, kind: str, end: bool = True) -> float | None:
        return next((e[1] if end else e[0] for e in pc[field] if e[2] == kind), None)

    points = {
        "peer_joined": sig["peer_joined"],
        "pc_created": pc3["created"],
        "peer_pc_created": pc_other["created"],
        "offer_sld_start": desc(offer_pc, "sld", "offer", end=False),
        "offer_sld_done": desc(offer_pc, "sld", "offer"),
        "offer_sent": sig["offer_sent"],
        "offer_received": sig["offer_received"],
        "peer_srd_start": desc(answer_pc, "srd", "offer", end=False),
        "peer_srd_done": desc(answer_pc, "srd", "offer"),
        "answer_sld_done": desc(answer_pc, "sld", "answer"),
        "answer_sent": sig["answer_sent"],
        "answer_received": sig["answer_received"],
        "answer_srd_start": desc(offer_pc, "srd", "answer", end=False),
        "answer_srd_done": desc(offer_pc, "srd", "answer"),
        "first_candidate_gathered": pc3.get("firstCandidate"),
        "first_candidate_received": sig["candidate_received_by_3"],
        "ice_checking": first_state(pc3["ice"], "checking"),
        "ice_connected": first_state(pc3["ice"], "connected"),
        "connected": first_state(pc3["conn"], "connected"),
        "peer_connected": first_state(pc_other["conn"], "connected"),
    }
    out: dict[str, Any] = {k: (None if v is None else r1(v - zero)) for k, v in points.items()}
    out["offered_by"] = "page 3" if sig["offerer"] == "3" else "page k"
    return out


# --- one configuration ----------------------------------------------------------------------


def baseline(page: Any) -> dict[str, float]:
    result = page.evaluate(BASELINE_JS)
    return {"pair_ms": r1(result["pairMs"]), "join_ms": r1(result["joinMs"])}


def cpu_share(seconds: float = 0.2) -> float:
    """Share of one core this process gets while spinning for ``seconds`` (1.0 = a core
    to itself; ~0.1 = the shared machine is ten runnable tasks deep)."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        pass
    return round((time.process_time() - cpu0) / (time.perf_counter() - wall0), 2)


def run_slot(browser: Any, base_page: Any, url: str, room: int, p: Params) -> dict[str, Any]:
    """One configuration's turn in a round: fresh pages 1 and 2 connect, then the peer
    (in-page) and our two kinds of join of page 3, each after a short settle."""
    share = cpu_share()
    rig = MeshRig(browser, url, f"/rooms/{room_slug(room)}/", p)
    try:
        rig.setup_pair()
        time.sleep(p.settle_s)
        b = baseline(base_page)
        time.sleep(p.settle_s)
        nav = rig.join_navigate()
        rig.leave_button()
        time.sleep(p.settle_s)
        rej = rig.join_rejoin()
        rig.leave_navigate()
    finally:
        rig.close()
    b["cpu_share"] = share
    return {"baseline": b, "navigate": nav, "rejoin": rej}


def run_rounds(browser: Any, servers: dict[str, Any], p: Params) -> dict[str, dict[str, Any]]:
    """Warm-up + rounds; in each round every configuration takes a turn (order alternating
    per round), so load drifts on the shared machine hit all of them alike."""
    base_context = browser.new_context()
    base_context.grant_permissions(["camera", "microphone"])
    base_page = base_context.new_page()
    base_page.set_default_timeout(p.wait_ms)
    # any page of the site's origin: a secure context (127.0.0.1) for getUserMedia
    base_page.goto(next(iter(servers.values())).url + "/me/token/")
    results: dict[str, dict[str, Any]] = {
        label: {
            "label": label,
            "failures": [],
            "samples": {"navigate": [], "rejoin": [], "baseline": []},
        }
        for label in servers
    }
    try:
        labels = list(servers)
        for i in range(p.warmup_rounds + p.rounds):
            for label in labels if i % 2 == 0 else labels[::-1]:
                out = results[label]
                try:
                    slot = run_slot(browser, base_page, servers[label].url, i, p)
                except Exception as exc:  # a slot may fail (timeout): recorded, bounded
                    out["failures"].append(f"round {i}: {type(exc).__name__}: {str(exc)[:300]}")
                    if len(out["failures"]) > p.max_failed_rounds:
                        raise
                    continue
                if i >= p.warmup_rounds:
                    for key, value in slot.items():
                        out["samples"][key].append(value)
    finally:
        base_context.close()
    for label, server in servers.items():
        results[label]["server_cpu_s"] = round(cpu_seconds(server.pid), 2)
    return results


@contextlib.contextmanager
def redis_config() -> Iterator[tuple[dict[str, str], str] | None]:
    """The Redis setup's env under a unique prefix (keys deleted after), None if no Redis."""
    import redis

    url = redis_url()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError:
        yield None
        return
    tag = unique_tag("mesh")
    try:
        yield redis_env(tag, url), tag
    finally:
        delete_keys(tag, url)


# --- the benchmark --------------------------------------------------------------------------


def summarise(config: dict[str, Any]) -> dict[str, Any]:
    s = config["samples"]
    out: dict[str, Any] = {}
    for mode in ("navigate", "rejoin"):
        rounds = s[mode]
        out[mode] = {
            key: stats([r[key] for r in rounds])
            for key in (
                "from_socket_ms",
                "from_welcome_ms",
                "from_origin_ms",
                "origin_to_socket_ms",
                "socket_open_ms",
                "welcome_after_open_ms",
                "camera_ms",
                "camera_after_welcome_ms",
                "welcome_to_first_offer_ms",
                "first_offer_to_last_answer_ms",
                "last_answer_to_all_connected_ms",
            )
        }
        for kind in ("offer", "answer"):
            out[mode][f"relay_{kind}_ms"] = stats(
                [v for r in rounds for v in r["relay_one_way_ms"][kind]]
            )
            out[mode][f"relay_{kind}_receiver_longtask_ms"] = stats(
                [v for r in rounds for v in r["relay_receiver_longtask_ms"][kind]]
            )
        out[mode]["page3_longtask_ms"] = stats([r["page3_longtask_ms"] for r in rounds])
        out[mode]["ice_to_dtls_ms"] = stats(
            [v for r in rounds for v in r["ice_to_dtls_ms"].values() if v is not None]
        )
        out[mode]["steps_from_socket_p50_ms"] = step_medians(rounds)
        out[mode]["loadavg_1m"] = stats([r["loadavg_1m"] for r in rounds])
        out[mode]["offers_sent"] = sorted({r["offers_sent"] for r in rounds})
        out[mode]["first_offer_by"] = sorted(
            {v for r in rounds for v in r.get("first_offer_by", {}).values()}
        )
        out[mode]["pair_1_2_untouched"] = all(r["pair_1_2_untouched"] for r in rounds)
    out["cpu_share"] = stats([b["cpu_share"] for b in s["baseline"]])
    out["baseline_pair_ms"] = stats([b["pair_ms"] for b in s["baseline"]])
    out["baseline_join_ms"] = stats([b["join_ms"] for b in s["baseline"]])
    return out


def step_medians(rounds: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median time of each step since page 3's socket (pairs 3-1 and 3-2 pooled)."""
    values: dict[str, list[float]] = {}
    for r in rounds:
        steps = r["steps_from_socket_ms"]
        for key in ("welcome", "camera_start", "camera_open"):
            if steps[key] is not None:
                values.setdefault(key, []).append(steps[key])
        for link in ("3-1", "3-2"):
            for key, value in steps[link].items():
                if isinstance(value, (int, float)):
                    values.setdefault(key, []).append(value)
    return {k: round(statistics.median(v), 1) for k, v in values.items()}


def rows_for(label: str, config: dict[str, Any], summary: dict[str, Any]) -> list[dict]:
    s = config["samples"]
    base = summary["baseline_pair_ms"]["p50"]
    base_join = summary["baseline_join_ms"]["p50"]
    rows: list[dict[str, Any]] = []

    def row(metric: str, values: list[float], target: str | None = None) -> None:
        st = stats(values)
        rows.append(
            {
                "metric": metric,
                "value": st["p50"],
                "unit": "ms",
                "p90": st["p90"],
                "config": label,
                "target": target,
                "n": len(values),
                # per round; pooled per-link samples are too many for the table
                "rounds": values if len(values) <= 12 else None,
            }
        )

    nav = s["navigate"]

    def each(runs: list[dict[str, Any]], key: str) -> list[float]:
        return [r[key] for r in runs]

    def pooled(key: str, hop: str) -> list[float]:  # per link, all navigate runs
        return [v for r in nav for v in r[key][hop]]

    for join, runs in (("navigate", nav), ("rejoin btn", s["rejoin"])):
        socket_ms, welcome_ms = each(runs, "from_socket_ms"), each(runs, "from_welcome_ms")
        row(f"3rd join -> 6 connected, from socket ({join})", socket_ms, f"<= {TARGET_MS:g}")
        row(f"3rd join -> 6 connected, from welcome ({join})", welcome_ms)
        if runs is nav:
            row("3rd join -> 6 connected, from navigation start", each(nav, "from_origin_ms"))
    row("  camera start (getUserMedia, from page load)", each(nav, "camera_ms"))
    row("  camera ready after welcome (>0: still opening)", each(nav, "camera_after_welcome_ms"))
    row("  offer hop offerer -> server -> answerer", pooled("relay_one_way_ms", "offer"))
    row("  answer hop answerer -> server -> offerer", pooled("relay_one_way_ms", "answer"))
    row(
        "  offer hop: answerer main thread in long tasks",
        pooled("relay_receiver_longtask_ms", "offer"),
    )
    row("  page 3 long tasks, socket -> all connected", each(nav, "page3_longtask_ms"))
    dtls = [v for r in nav for v in r["ice_to_dtls_ms"].values() if v is not None]
    row("  ICE connected -> connected (DTLS), per link", dtls)
    row("in-page pair createOffer -> both connected", each(s["baseline"], "pair_ms"))
    row("in-page 3rd join -> 4 new connected", each(s["baseline"], "join_ms"))
    ours = summary["navigate"]["from_socket_ms"]["p50"]
    rows.append(
        {
            "metric": "ratio ours(from socket) / in-page pair",
            "value": round(ours / base, 2),
            "unit": "x",
            "config": label,
        }
    )
    rows.append(
        {
            "metric": "ratio ours(from socket) / in-page 3rd join",
            "value": round(ours / base_join, 2),
            "unit": "x",
            "config": label,
        }
    )
    for r in rows:
        for key in ("target", "rounds"):
            if r.get(key, "") is None:
                r.pop(key)
    return rows


def channel_layer_of(server: Any) -> str:
    """The channel layer class the server's settings resolve to (same env as the server)."""
    code = "from django.conf import settings; print(settings.CHANNEL_LAYERS['default']['BACKEND'])"
    return server.manage("shell", "-c", code).strip().splitlines()[-1]


def run(quick: bool) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from tests.support.chromium import chromium_args, chromium_path

    p = QUICK if quick else FULL
    load_start = os.getloadavg()
    configs: list[dict[str, Any]] = []
    redis_prefix: str | None = None
    layers: dict[str, str] = {}
    rooms = p.warmup_rounds + p.rounds  # a fresh room per round: no ghost of a previous one
    notes: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=chromium_args()
        )
        try:
            with contextlib.ExitStack() as stack:
                servers = {
                    "embedded": stack.enter_context(daphne_site(dict(EMBEDDED_ENV), rooms, 3))
                }
                redis_setup = stack.enter_context(redis_config())
                if redis_setup is None:
                    notes.append(f"no Redis at {redis_url()}: redis configuration skipped")
                else:
                    env, redis_prefix = redis_setup
                    servers["redis"] = stack.enter_context(daphne_site(env, rooms, 3))
                layers = {label: channel_layer_of(server) for label, server in servers.items()}
                configs = list(run_rounds(browser, servers, p).values())
        finally:
            browser.close()

    rows: list[dict[str, Any]] = []
    summaries: dict[str, Any] = {}
    for config in configs:
        summary = summarise(config)
        summaries[config["label"]] = summary
        rows += rows_for(config["label"], config, summary)

    emb = summaries["embedded"]
    ours = emb["navigate"]["from_socket_ms"]["p50"]
    base = emb["baseline_pair_ms"]["p50"]
    ratio = round(ours / base, 2)
    extra = ""
    if "redis" in summaries:
        red = summaries["redis"]
        red_ours = red["navigate"]["from_socket_ms"]["p50"]
        extra = f"; Redis {red_ours:.0f} ms (x{red_ours / red['baseline_pair_ms']['p50']:.1f})"
    headline = (
        f"3rd page join -> all 6 connected (from its room socket, median of {p.rounds}): "
        f"{ours:.0f} ms embedded vs {base:.0f} ms for an in-page pair -> x{ratio:.1f}{extra}; "
        f"from welcome {emb['navigate']['from_welcome_ms']['p50']:.0f} ms; "
        f"target <= {TARGET_MS:g} ms: {'met' if ours <= TARGET_MS else 'NOT met'}"
    )
    parameters = {
        **asdict(p),
        "target_ms": TARGET_MS,
        "seen_in_page_ms": SEEN_IN_PAGE_MS,
        "seen_trivial_relay_ms": SEEN_TRIVIAL_RELAY_MS,
        "configs": [c["label"] for c in configs],
        "channel_layers": layers,
        "redis": {"url": redis_url(), "key_prefix": redis_prefix, "deleted_after": True}
        if redis_prefix
        else None,
        "browser": "Debian /usr/bin/chromium, headless, one browser, 3 contexts + 1 baseline",
        "clock": "performance.timeOrigin + performance.now() in each page",
        "end": "last of the 4 new RTCPeerConnections (1->3, 2->3, 3->1, 3->2) 'connected'; "
        "the 1-2 pair stays connected",
        "origins": {
            "from_socket": "page 3's room WebSocket constructed",
            "from_welcome": "page 3 received 'welcome'",
            "from_origin": "navigate: performance.timeOrigin (navigation start); "
            "rejoin: the Rejoin click",
        },
        "round": "each configuration in turn (order alternating per round): 3 new "
        "browser contexts, pages 1 and 2 join a fresh room and connect, settle, in-page "
        "baseline, settle, page 3 navigate join, Leave button, settle, Rejoin button join, "
        "navigate away, contexts closed",
    }
    detail = {
        "summary": summaries,
        "checks": {
            c["label"]: {
                "failures": c["failures"],
                "server_cpu_s": c["server_cpu_s"],
                "pair_1_2_untouched": all(
                    r["pair_1_2_untouched"] for m in ("navigate", "rejoin") for r in c["samples"][m]
                ),
            }
            for c in configs
        },
        "notes": notes,
        "loadavg": {
            "start": [round(v, 2) for v in load_start],
            "end": [round(v, 2) for v in os.getloadavg()],
        },
        "samples": {c["label"]: c["samples"] for c in configs},
    }
    return result(NAME, rows, ratio, headline, parameters, detail)
