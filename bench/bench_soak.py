"""Soak: R mesh rooms x 3 clients over the web processes, with optional faults.

Every client is what a room page is on the wire (docs/protocol.md): a token from
``GET /me/token/`` (its own session, so its own identity), the room socket with ``Origin``,
``welcome``, a ``ping`` every ``heartbeat_interval``, and one addressed message per second
to a peer of its room (alternately the two others): a ``candidate`` whose
``usernameFragment`` carries the sender, the target, a sequence number and the send time
(every 10th an ~5 KB ``offer`` carrying the same in its ``s=`` line). A closed socket
reconnects as ``static/js/socket.js`` does (jittered backoff 0.5 s doubling to 15 s, reset
on open; no reconnect after 4004/4005/4009/4010/4013; a fresh token after 4001-4003) with
``?resume=<previous peer id>`` as ``room-page.js`` adds it. Lobby sockets (one per web
process) keep every room's count from ``lobby-state`` and ``presence`` deltas.

Counted: sent, delivered, lost, duplicated, misdelivered (another client than the
addressed one), out of order (per sender, at the receiver); one-way latency (one clock: all
clients are in this process) overall and per second of sending; sockets closed by the
server and their close codes; ``error`` replies by code. Every second the presence seen by
the clients is compared with the truth (the sockets this process holds open and welcomed):
each client's peer list, and each lobby socket's room counts. After a fault the
time-to-converge is from the fault's end (Redis back, or the kill) to the first sample from
which every later one is correct.

Topologies (``--via``): ``direct``: two Daphne processes of one site (shared SQLite) on a
**private** ``redis-server`` this benchmark starts on a free port (never the shared one:
``--redis-restart-at`` restarts it), each room's three clients split across them, a
reconnect tries the other process when its own is gone (what nginx does for a dead
upstream). ``nginx``: ``tests.support.topology`` (nginx in front of the web processes), every
socket through nginx.

Faults: ``--redis-restart-at T --redis-down D``: the private Redis stopped (SIGTERM, no
persistence: its data is gone, as after a crash) at second T and started again D seconds
later; ``--kill-at T``: ``kill -9`` of the second web process. Seconds count from the
moment the last of the 3R clients got its ``welcome``.

Run: ``python -m bench soak`` (R=100, 120 s, steady state) or
``python -m bench.bench_soak --rooms 100 --seconds 120 --redis-restart-at 30 --out
soak_redis_blip``: writes ``bench/results/<out>.json`` with the per-second series.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.clients import WsClient, WsError, handshake
from bench.daphne_traced import TRACED_DAPHNE
from bench.offers import make_sdp
from bench.runner import build_record, report, result, validate_result, write_record
from bench.support import (
    HOST,
    create_rooms_code,
    daphne_site,
    exit_cleanly_on_sigterm,
    log_error_counts,
    make_tokens,
    ms,
    percentile,
    raise_nofile,
    redis_env,
    room_slug,
    sibling_process,
    unique_tag,
)
from tests.support.redis_server import RedisServer

NAME = "soak"
CLIENTS_PER_ROOM = 3  # a full mesh room (its default capacity)
FINAL_CLOSE_CODES = frozenset({4004, 4005, 4009, 4010, 4013})  # static/js/close-codes.js
TOKEN_CLOSE_CODES = frozenset({4001, 4002, 4003})
GOAL = {
    "steady_state": "0 lost, 0 duplicated, 0 misdelivered",
    "redis_blip_1s": "< 1 % of sockets closed; presence correct within one heartbeat interval",
}
#: the server limits a benchmark must lift: every client here comes from 127.0.0.1
SERVER_ENV = {"IDENTITY_MINT_RATE_PER_ADDRESS": "1000000/h"}
CANDIDATE = "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host"
TAG_RE = re.compile(r"\r\ns=soak (\S+)\r\n")


@dataclass(frozen=True)
class Params:
    rooms: int = 100
    seconds: float = 120.0
    via: str = "nginx"
    redis_restart_at: float | None = None
    redis_down: float = 1.0
    kill_at: float | None = None
    settle_s: float = 0.0  # pause between the last welcome and the first message
    drain_s: float = 3.0  # after the last message: late deliveries still count
    connect_concurrency: int = 16
    offer_every: int = 10  # every Nth message is a ~5 KB offer, the others candidates
    joins_in_run: bool = False  # second 0 is the first join, not the last welcome
    tokens: str = "http"  # "http": GET /me/token/ per client; "local": signed here
    trace: bool = False  # servers record their loop stalls and GC pauses (bench.daphne_traced)
    phase: str = "spread"  # each client's send time in the second: random, or all at once
    out: str = NAME


FULL = Params()
QUICK = Params(rooms=10, seconds=10.0)


# --- a private Redis --------------------------------------------------------------------------


@contextlib.contextmanager
def private_redis() -> Iterator[RedisServer]:
    """A ``redis-server`` of our own (a fault stops and restarts it; the shared one is never
    touched), stopped and its directory removed afterwards."""
    redis = RedisServer().start()
    try:
        yield redis
    finally:
        redis.stop()
        shutil.rmtree(redis.workdir, ignore_errors=True)


# --- clients --------------------------------------------------------------------------------


class SoakSocket(WsClient):
    """The lean client, keeping the close code the server sent (``None``: TCP dropped), and
    handing the first message to ``on_ready`` synchronously: the messages that follow it in
    the same read are passed to ``on_message`` before an ``await ready`` resumes, so state
    set from the first message after that await would overwrite them."""

    def __init__(self, *args: Any, on_ready: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_code: int | None = None
        self.on_ready = on_ready

    def _message(self, text: str) -> None:
        if not self.ready.done() and self.on_ready is not None:
            msg = json.loads(text)
            if msg.get("type") in self.ready_types:
                self.on_ready(self, msg)
        super()._message(text)

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == 0x8 and self.close_code is None:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        super()._frame(opcode, fin, payload)


@dataclass
class Identity:
    token: str
    user: str
    cookie: str


def fetch_token(port: int, cookie: str = "") -> Identity:
    """``GET /me/token/`` as a page would (a new visitor without ``cookie``)."""
    request = urllib.request.Request(f"http://{HOST}:{port}/me/token/")
    if cookie:
        request.add_header("Cookie", cookie)
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
        set_cookie = response.headers.get_all("Set-Cookie") or []
    cookies = [c.split(";", 1)[0] for c in set_cookie] or [cookie]
    return Identity(body["token"], body["identity"]["id"], "; ".join(cookies))


def local_identities(count: int) -> list[Identity]:
    """Tokens signed in this process (``bench.support.make_tokens``), no request to the
    servers: their first burst of allocations is then the joins themselves."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
    from identity.tokens import verify_token

    return [Identity(t, verify_token(t).id, "") for t in make_tokens(count, "soak")]


@dataclass
class Sent:
    sender: int
    target: int
    seq: int
    second: int
    at: float
    cross: bool | None  # sender and target on different processes (direct mode only)


class Soak:
    """The run's state: clients, lobby sockets, truth, counters, per-second series."""

    def __init__(self, p: Params, ports: list[int]) -> None:
        self.p = p
        self.ports = ports  # web entry points (direct: one per process; nginx: one)
        self.alive = [True] * len(ports)
        self.clients: list[Client] = []
        self.lobbies: list[Lobby] = []
        self.sent: dict[tuple[int, int], Sent] = {}
        self.received: dict[tuple[int, int], float] = {}  # (sender, seq) -> latency
        self.duplicated = 0
        self.misdelivered = 0
        self.out_of_order = 0
        self.skipped = Counter[str]()  # due but not sent, by reason
        self.errors = Counter[str]()  # error replies by code
        self.notices = Counter[str]()  # other server messages (resyncs, service states)
        self.error_seconds: dict[int, Counter[str]] = {}
        self.closes: list[dict[str, Any]] = []
        self.reconnects: list[float] = []  # close -> next welcome, s
        self.samples: list[dict[str, Any]] = []
        self.loop_lag: dict[int, float] = {}
        self.events: list[dict[str, Any]] = []
        self.t0 = 0.0
        self.t0_wall = 0.0  # time.time() at t0, for the servers' traces
        self.sending = False
        self.heartbeat_interval = 10.0

    def second(self, at: float | None = None) -> int:
        return int(((time.perf_counter() if at is None else at) - self.t0) // 1)

    def truth(self) -> dict[int, dict[int, str]]:
        """room -> {client index: peer id} of the sockets open and welcomed now."""
        rooms: dict[int, dict[int, str]] = {}
        for c in self.clients:
            if c.joined and c.peer_id:
                rooms.setdefault(c.room, {})[c.idx] = c.peer_id
        return rooms


class Client:
    def __init__(self, soak: Soak, idx: int, identity: Identity) -> None:
        self.soak = soak
        self.idx = idx
        self.room = idx // CLIENTS_PER_ROOM
        self.slot = idx % CLIENTS_PER_ROOM
        self.identity = identity
        # direct mode: slot 0 on the first process, slot 1 on the second, slot 2 alternating
        n = len(soak.ports)
        self.home = (self.slot if self.slot < 2 else self.room) % n
        self.server: int | None = None
        self.ws: SoakSocket | None = None
        self.peer_id: str | None = None
        self.peers: dict[str, str] = {}  # peer id -> identity id
        self.joined = False
        self.gave_up = False
        self.seq = 0
        self.last_seq: dict[int, int] = {}  # sender -> highest seq received
        self.closed_at: float | None = None
        self.joined_at: float | None = None  # first welcome
        self.attempt = 0

    # wire
    def path(self, resume: str | None) -> str:
        query = f"token={self.identity.token}&v=1" + (f"&resume={resume}" if resume else "")
        return f"/ws/rooms/{room_slug(self.room)}/?{query}"

    async def connect(self, resume: str | None = None) -> None:
        """One attempt: the home process first, the others if it refuses TCP."""
        soak, loop = self.soak, asyncio.get_running_loop()
        order = [(self.home + k) % len(soak.ports) for k in range(len(soak.ports))]
        last: Exception | None = None
        for server in order:
            port = soak.ports[server]
            ws = SoakSocket(
                handshake(port, self.path(resume)),
                frozenset({"welcome"}),
                self.on_message,
                on_ready=self.on_welcome,
            )
            try:
                async with asyncio.timeout(30):
                    await loop.create_connection(lambda ws=ws: ws, HOST, port)
                    self.ws = ws
                    welcome = await ws.ready
            except OSError as exc:  # refused: that process is gone, try the next
                last = exc
                ws.abort()
                continue
            except BaseException:
                ws.abort()
                raise
            self.server = server
            self.joined_at = self.joined_at or time.perf_counter()
            soak.heartbeat_interval = float(welcome.get("heartbeat_interval") or 10)
            self.joined = True
            self.attempt = 0
            if self.closed_at is not None:
                soak.reconnects.append(time.perf_counter() - self.closed_at)
                self.closed_at = None
            ws.closed.add_done_callback(lambda _f, ws=ws: self.on_closed(ws))
            return
        raise WsError(f"no process accepted the socket ({last})")

    def on_welcome(self, ws: SoakSocket, welcome: dict[str, Any]) -> None:
        if ws is self.ws:
            self.peer_id = welcome["you"]["peer"]
            self.peers = {p["peer"]: p["user"] for p in welcome.get("peers", [])}

    def on_closed(self, ws: SoakSocket) -> None:
        if ws is not self.ws or not self.joined:
            return
        soak = self.soak
        self.joined = False
        self.closed_at = time.perf_counter()
        if soak.sending:  # not our own close at the end
            soak.closes.append(
                {
                    "client": self.idx,
                    "second": soak.second(self.closed_at),
                    "code": ws.close_code,  # None: TCP dropped without a close frame
                    "server": self.server,
                }
            )
        if soak.sending:
            asyncio.get_running_loop().create_task(self.reconnect(ws.close_code))

    async def reconnect(self, code: int | None) -> None:
        """``socket.js``'s ``onClose``: backoff, token refresh, final codes; ``?resume=``."""
        soak = self.soak
        while soak.sending:
            if code in FINAL_CLOSE_CODES:
                self.gave_up = True
                return
            if code in TOKEN_CLOSE_CODES:
                port = soak.ports[self.home if soak.alive[self.home] else 0]
                with contextlib.suppress(Exception):
                    self.identity = await asyncio.to_thread(fetch_token, port, self.identity.cookie)
            self.attempt += 1
            backoff = min(15.0, 0.5 * 2 ** min(self.attempt, 6))
            await asyncio.sleep(backoff / 2 + random.random() * backoff / 2)
            if not soak.sending:
                return
            try:
                await self.connect(resume=self.peer_id)
                return
            except WsError as exc:  # refused before welcome: an error message, or closed
                code = self.ws.close_code if self.ws is not None else None
                soak.events.append(
                    {"second": soak.second(), "client": self.idx, "reconnect": str(exc)[:120]}
                )
            except TimeoutError:
                code = None

    def on_message(self, ws: WsClient, text: str) -> None:
        if ws is not self.ws:
            return
        now = time.perf_counter()
        soak = self.soak
        msg = json.loads(text)
        kind = msg.get("type")
        if kind == "peer-joined":
            self.peers[msg["peer"]] = msg["user"]
        elif kind == "peer-left":
            self.peers.pop(msg["peer"], None)
        elif kind in ("candidate", "offer"):
            if kind == "candidate":
                tag = (msg.get("candidate") or {}).get("usernameFragment") or ""
            else:
                found = TAG_RE.search(msg.get("sdp", ""), 0, 400)
                tag = found.group(1) if found else ""
            sender, target, seq = (int(x) for x in tag.split(".")[:3])
            if target != self.idx:
                soak.misdelivered += 1
                return
            key = (sender, seq)
            if key in soak.received:
                soak.duplicated += 1
                return
            sent = soak.sent.get(key)
            soak.received[key] = now - sent.at if sent else float("nan")
            if seq < self.last_seq.get(sender, -1):
                soak.out_of_order += 1
            else:
                self.last_seq[sender] = seq
        elif kind == "error":
            code = str(msg.get("code"))
            soak.errors[code] += 1
            soak.error_seconds.setdefault(soak.second(now), Counter())[code] += 1
        elif kind == "pong":
            pass
        elif isinstance(msg.get("peers"), list):  # a resync of the room's member list
            self.peers = {p["peer"]: p["user"] for p in msg["peers"] if p["peer"] != self.peer_id}
            soak.notices[f"{kind} (resync)"] += 1
        else:  # e.g. ``service`` (reconnecting / ok): counted by type and state
            soak.notices[f"{kind} {msg.get('state', '')}".strip()] += 1

    # the clients' own loop: one message per second, a ping per heartbeat interval
    async def run(self, offset: float) -> None:
        soak = self.soak
        next_send = soak.t0 + offset
        next_ping = soak.t0 + offset * soak.heartbeat_interval
        end = soak.t0 + soak.p.seconds
        while next_send < end:
            await asyncio.sleep(max(0.0, min(next_send, next_ping) - time.perf_counter()))
            now = time.perf_counter()
            if now >= next_ping:
                next_ping += soak.heartbeat_interval
                if self.joined and self.ws is not None:
                    self.ws.send_json({"type": "ping", "t": time.time()})
            if now >= next_send:
                self.send_one()
                next_send += 1.0

    def send_one(self) -> None:
        soak = self.soak
        self.seq += 1
        seq = self.seq
        target = self.room * CLIENTS_PER_ROOM + (self.slot + 1 + seq % 2) % CLIENTS_PER_ROOM
        if not self.joined or self.ws is None:
            soak.skipped["sender not connected"] += 1
            return
        target_user = soak.clients[target].identity.user
        to = next((peer for peer, user in self.peers.items() if user == target_user), None)
        if to is None:
            soak.skipped["target not in the sender's peer list"] += 1
            return
        now = time.perf_counter()
        tag = f"{self.idx}.{target}.{seq}.{round((now - soak.t0) * 1e6)}"
        if seq % soak.p.offer_every == 0:
            sdp = make_sdp(seq).replace("\r\ns=-\r\n", f"\r\ns=soak {tag}\r\n", 1)
            message: dict[str, Any] = {"type": "offer", "to": to, "sdp": sdp}
        else:
            candidate = {"candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0}
            message = {"type": "candidate", "to": to, "candidate": candidate}
            candidate["usernameFragment"] = tag
        other = soak.clients[target]
        cross = None
        if soak.p.via == "direct" and other.joined:
            cross = other.server != self.server
        soak.sent[(self.idx, seq)] = Sent(self.idx, target, seq, soak.second(now), now, cross)
        self.ws.send_json(message)


class Lobby:
    """One lobby page: room counts from ``lobby-state``, then ``presence`` deltas, kept by
    the rule ``static/js/lobby-page.js`` applies (docs/protocol.md, "Order: ``at``"): per
    room the count with the newest ``at``, so the soak reports what a page shows."""

    def __init__(self, soak: Soak, server: int, identity: Identity) -> None:
        self.soak = soak
        self.server = server
        self.identity = identity
        self.ws: SoakSocket | None = None
        self.counts: dict[str, int] = {}  # room -> count (absent: 0)
        self.at: dict[str, int] = {}  # room -> time of its count; absent: the snapshot's
        self.snapshot_at = -math.inf
        self.open = False
        self.closes: list[int | None] = []
        self.history: dict[str, list[str]] = {}  # room -> deltas received ("join <peer> 2")

    async def connect(self) -> None:
        soak, loop = self.soak, asyncio.get_running_loop()
        order = [(self.server + k) % len(soak.ports) for k in range(len(soak.ports))]
        for server in order:
            port = soak.ports[server]
            path = f"/ws/lobby/?token={self.identity.token}&v=1"
            ws = SoakSocket(
                handshake(port, path),
                frozenset({"lobby-state"}),
                self.on_message,
                on_ready=self.on_state,
            )
            self.ws = ws
            try:
                async with asyncio.timeout(30):
                    await loop.create_connection(lambda ws=ws: ws, HOST, port)
                    await ws.ready
            except OSError:
                ws.abort()
                continue
            self.open = True
            ws.closed.add_done_callback(lambda _f, ws=ws: self.on_closed(ws))
            return
        raise WsError("no process accepted the lobby socket")

    def on_state(self, ws: SoakSocket, state: dict[str, Any]) -> None:
        if ws is self.ws:
            self.apply_state(state)

    def current(self, room: str, at: int | None) -> bool:
        """News of ``room`` made at ``at`` is not older than what the page shows."""
        return at is None or at >= self.at.get(room, self.snapshot_at)

    def apply_state(self, state: dict[str, Any]) -> None:
        """A ``lobby-state`` replaces each room's count it is newer than."""
        at, rooms = state.get("at"), state["rooms"]
        for slug in set(self.counts) | set(self.at) | set(rooms):
            if not self.current(slug, at):
                continue
            self.counts.pop(slug, None)
            self.at.pop(slug, None)
            if rooms.get(slug, {}).get("count"):
                self.counts[slug] = rooms[slug]["count"]
                if at is not None:
                    self.at[slug] = at
        if at is not None:
            self.snapshot_at = max(self.snapshot_at, at)

    def on_closed(self, ws: SoakSocket) -> None:
        if ws is not self.ws:
            return
        self.open = False
        if self.soak.sending:
            self.closes.append(ws.close_code)
            asyncio.get_running_loop().create_task(self.reconnect())

    async def reconnect(self) -> None:
        attempt = 0
        while self.soak.sending:
            attempt += 1
            backoff = min(15.0, 0.5 * 2 ** min(attempt, 6))
            await asyncio.sleep(backoff / 2 + random.random() * backoff / 2)
            with contextlib.suppress(WsError, TimeoutError):
                await self.connect()
                return

    def on_message(self, ws: WsClient, text: str) -> None:
        if ws is not self.ws:
            return
        msg = json.loads(text)
        if msg.get("type") == "presence" and "count" in msg:
            room, at = msg["room"], msg.get("at")
            peer = (msg.get("peer") or {}).get("peer", "")
            fresh = self.current(room, at)
            note = "" if fresh else " (older: ignored)"
            self.history.setdefault(room, []).append(f"{msg['event']} {peer} {msg['count']}{note}")
            if not fresh:
                return
            if at is not None:
                self.at[room] = at
            if msg["count"]:
                self.counts[room] = msg["count"]
            else:
                self.counts.pop(room, None)
        elif msg.get("type") == "lobby-state":  # a resync
            self.apply_state(msg)


# --- sampling, faults -----------------------------------------------------------------------


async def sampler(soak: Soak) -> None:
    """Every second: presence as the clients and lobbies see it vs the truth."""
    while True:
        await asyncio.sleep(1.0 - ((time.perf_counter() - soak.t0) % 1.0) + 0.5)
        soak.samples.append(presence_sample(soak))


def presence_sample(soak: Soak) -> dict[str, Any]:
    truth = soak.truth()
    wrong = ghosts = missing = 0
    for c in soak.clients:
        if not c.joined:
            continue
        want = {pid for idx, pid in truth.get(c.room, {}).items() if idx != c.idx}
        have = set(c.peers)
        if have != want:
            wrong += 1
            ghosts += len(have - want)
            missing += len(want - have)
    counts = {room_slug(r): len(m) for r, m in truth.items()}
    lobby_wrong, lobby_extra, examples = [], [], {}
    for lobby in soak.lobbies:
        if not lobby.open:
            lobby_wrong.append(None)
            continue
        slugs = (set(counts) | set(lobby.counts)) - {s for s in lobby.counts if "." in s}
        bad = [s for s in slugs if lobby.counts.get(s, 0) != counts.get(s, 0)]
        lobby_wrong.append(len(bad))
        for slug in sorted(bad)[:3]:
            examples[slug] = [lobby.counts.get(slug, 0), counts.get(slug, 0)]
            examples[slug] += lobby.history.get(slug, [])[-6:]
        lobby_extra.append(sum(max(0, lobby.counts.get(s, 0) - counts.get(s, 0)) for s in bad))
    return {
        "t": round(time.perf_counter() - soak.t0, 2),
        "open": sum(c.joined for c in soak.clients),
        "peer_lists_wrong": wrong,
        "ghost_entries": ghosts,
        "missing_entries": missing,
        "lobby_rooms_wrong": lobby_wrong,
        "lobby_ghosts": lobby_extra,
        "lobby_examples": examples,  # slug: [a lobby's count, the truth, its last deltas]
        "peers_correct": wrong == 0,
        "lobby_correct": all(w == 0 for w in lobby_wrong),
        "correct": wrong == 0 and all(w == 0 for w in lobby_wrong),
    }


async def loop_lag(soak: Soak) -> None:
    """The client loop's own lateness (a 10 ms timer), max per second."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        lag = time.perf_counter() - before - 0.01
        second = soak.second()
        soak.loop_lag[second] = max(soak.loop_lag.get(second, 0.0), lag)


async def redis_fault(soak: Soak, redis: RedisServer, at: float, down: float) -> None:
    await asyncio.sleep(max(0.0, soak.t0 + at - time.perf_counter()))
    stopped = time.perf_counter()
    await asyncio.to_thread(redis.stop)
    await asyncio.sleep(max(0.0, stopped + down - time.perf_counter()))
    await asyncio.to_thread(redis.start)
    back = time.perf_counter()
    soak.events.append(
        {
            "fault": "redis-restart",
            "t_start": round(stopped - soak.t0, 3),
            "t_end": round(back - soak.t0, 3),
            "down_s": round(back - stopped, 3),
        }
    )


async def kill_fault(soak: Soak, kill: Any, server: int, at: float) -> None:
    await asyncio.sleep(max(0.0, soak.t0 + at - time.perf_counter()))
    t = time.perf_counter()
    await asyncio.to_thread(kill)
    if server < len(soak.alive):  # direct: that entry point is gone (nginx: one for all)
        soak.alive[server] = False
    soak.events.append({"fault": "kill-9", "server": server, "t_start": round(t - soak.t0, 3)})
    soak.events[-1]["t_end"] = soak.events[-1]["t_start"]


# --- the run --------------------------------------------------------------------------------


async def drive(p: Params, ports: list[int], faults: dict[str, Any]) -> Soak:
    soak = Soak(p, ports)
    n = p.rooms * CLIENTS_PER_ROOM
    with ThreadPoolExecutor(8) as pool:
        loop = asyncio.get_running_loop()
        if p.tokens == "http":
            ids = await asyncio.gather(
                *(loop.run_in_executor(pool, fetch_token, ports[i % len(ports)]) for i in range(n))
            )
        else:
            ids = local_identities(n)
        lobby_ids = await asyncio.gather(
            *(loop.run_in_executor(pool, fetch_token, port) for port in ports)
        )
    soak.clients = [Client(soak, i, ids[i]) for i in range(n)]
    soak.lobbies = [Lobby(soak, i, lobby_ids[i]) for i in range(len(ports))]
    for lobby in soak.lobbies:
        await lobby.connect()
    soak.sending = True  # sockets closed from now on reconnect
    todo = iter(soak.clients)
    join_start = time.perf_counter()

    async def joiner() -> None:
        for client in todo:
            await client.connect()

    joining = asyncio.gather(*(joiner() for _ in range(p.connect_concurrency)))
    if p.joins_in_run:  # the clock starts with the joins: each client sends once welcomed
        soak.t0, soak.t0_wall = time.perf_counter(), time.time()
    else:
        await joining
        await asyncio.sleep(p.settle_s)
        soak.t0, soak.t0_wall = time.perf_counter(), time.time()
    tasks = [asyncio.create_task(sampler(soak)), asyncio.create_task(loop_lag(soak))]
    if p.redis_restart_at is not None:
        tasks.append(
            asyncio.create_task(
                redis_fault(soak, faults["redis"], p.redis_restart_at, p.redis_down)
            )
        )
    if p.kill_at is not None:
        tasks.append(asyncio.create_task(kill_fault(soak, faults["kill"], 1, p.kill_at)))
    try:
        rng = random.Random(15)
        offsets = [rng.random() if p.phase == "spread" else 0.0 for _ in soak.clients]
        await asyncio.gather(
            joining, *(c.run(o) for c, o in zip(soak.clients, offsets, strict=True))
        )
        await asyncio.sleep(p.drain_s)
        soak.samples.append(presence_sample(soak))
    finally:
        soak.sending = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    joined = [c.joined_at for c in soak.clients if c.joined_at]
    soak.events.append({"joins_s": round(max(joined, default=join_start) - join_start, 3)})
    sockets = [c.ws for c in soak.clients if c.ws] + [lb.ws for lb in soak.lobbies if lb.ws]
    for ws in sockets:
        ws.close()
    await asyncio.wait([ws.closed for ws in sockets], timeout=10)
    for ws in sockets:
        ws.abort()
    return soak


# --- figures --------------------------------------------------------------------------------


def converge_after(samples: list[dict[str, Any]], t_end: float, key: str) -> float | None:
    """Seconds from ``t_end`` to the first sample from which every later one is correct
    (``key``: ``peers_correct``, ``lobby_correct`` or both, ``correct``)."""
    after = [s for s in samples if s["t"] >= t_end]
    first = None
    for s in after:
        if not s[key]:
            first = None
        elif first is None:
            first = s["t"]
    return None if first is None else round(first - t_end, 2)


def figures(soak: Soak, p: Params) -> dict[str, Any]:
    seconds = int(p.seconds)
    series = []
    per_second: dict[int, list[Sent]] = {}
    for s in soak.sent.values():
        per_second.setdefault(s.second, []).append(s)
    close_seconds = Counter(c["second"] for c in soak.closes)
    for k in range(seconds):
        sent = per_second.get(k, [])
        lat = [soak.received[(s.sender, s.seq)] for s in sent if (s.sender, s.seq) in soak.received]
        series.append(
            {
                "s": k,
                "sent": len(sent),
                "delivered": len(lat),
                "lost": len(sent) - len(lat),
                "p50_ms": ms(percentile(lat, 50)) if lat else None,
                "p99_ms": ms(percentile(lat, 99)) if lat else None,
                "max_ms": ms(max(lat)) if lat else None,
                "closed": close_seconds.get(k, 0),
                "errors": dict(soak.error_seconds.get(k, {})),
                "client_loop_lag_max_ms": ms(soak.loop_lag.get(k, 0.0)),
            }
        )
    all_lat = list(soak.received.values())
    cross = [soak.received[k] for k, s in soak.sent.items() if s.cross and k in soak.received]
    local = [
        soak.received[k] for k, s in soak.sent.items() if s.cross is False and k in soak.received
    ]
    faults = [e for e in soak.events if "fault" in e]
    first_fault = min((f["t_start"] for f in faults), default=p.seconds)
    steady = [s for s in soak.sent.values() if s.at - soak.t0 < first_fault]
    steady_lost = sum((s.sender, s.seq) not in soak.received for s in steady)
    closed_clients = {c["client"] for c in soak.closes}
    n = len(soak.clients)
    out: dict[str, Any] = {
        "clients": n,
        "sent": len(soak.sent),
        "delivered": len(soak.received),
        "lost": len(soak.sent) - len(soak.received),
        "duplicated": soak.duplicated,
        "misdelivered": soak.misdelivered,
        "out_of_order": soak.out_of_order,
        "skipped": dict(soak.skipped),
        "errors": dict(soak.errors),
        "notices": dict(soak.notices),
        "latency_ms": {
            "p50": ms(percentile(all_lat, 50)),
            "p99": ms(percentile(all_lat, 99)),
            "max": ms(max(all_lat)) if all_lat else None,
            "cross_process_p50": ms(percentile(cross, 50)) if cross else None,
            "cross_process_p99": ms(percentile(cross, 99)) if cross else None,
            "same_process_p50": ms(percentile(local, 50)) if local else None,
            "same_process_p99": ms(percentile(local, 99)) if local else None,
        },
        "steady_state": {
            "until_s": first_fault,
            "sent": len(steady),
            "lost": steady_lost,
            "p99_ms": ms(
                percentile(
                    [
                        soak.received[(s.sender, s.seq)]
                        for s in steady
                        if (s.sender, s.seq) in soak.received
                    ],
                    99,
                )
            ),
        },
        "sockets_closed": len(closed_clients),
        "sockets_closed_pct": round(100 * len(closed_clients) / n, 2),
        "close_events": len(soak.closes),
        "close_codes": dict(Counter(str(c["code"]) for c in soak.closes)),
        "gave_up": sum(c.gave_up for c in soak.clients),
        "open_at_end": sum(c.joined for c in soak.clients),
        "reconnect_s": {
            "n": len(soak.reconnects),
            "p50": round(percentile(soak.reconnects, 50), 3) if soak.reconnects else None,
            "max": round(max(soak.reconnects), 3) if soak.reconnects else None,
        },
        "lobby_closes": [lb.closes for lb in soak.lobbies],
        "client_loop_lag_max_ms": ms(max(soak.loop_lag.values(), default=0.0)),
        "faults": faults,
        "events": [e for e in soak.events if "fault" not in e][:50],
        "presence_final": soak.samples[-1] if soak.samples else None,
        "presence_wrong_samples": sum(not s["correct"] for s in soak.samples),
        "peer_lists_wrong_samples": sum(not s["peers_correct"] for s in soak.samples),
        "lobby_wrong_samples": sum(not s["lobby_correct"] for s in soak.samples),
    }
    for fault in faults:
        fault["converged_after_s"] = converge_after(soak.samples, fault["t_end"], "correct")
        for key in ("peers_correct", "lobby_correct"):
            fault[f"{key}_after_s"] = converge_after(soak.samples, fault["t_end"], key)
        window = [
            s
            for s in soak.sent.values()
            if fault["t_start"] - 1 <= s.at - soak.t0 < fault["t_end"] + soak.heartbeat_interval
        ]
        fault["lost_in_window"] = sum((s.sender, s.seq) not in soak.received for s in window)
    slow = sorted(
        ((lat, soak.sent[key]) for key, lat in soak.received.items() if key in soak.sent),
        key=lambda pair: pair[0],
        reverse=True,
    )[:30]
    out["slowest"] = [
        {"t": round(s.at - soak.t0, 3), "ms": ms(lat), "cross": s.cross} for lat, s in slow
    ]
    out["first_seconds_p99_ms"] = [row["p99_ms"] for row in series[:10]]
    out["t0_wall"] = soak.t0_wall
    out["series"] = series
    out["presence_samples"] = soak.samples
    return out


def add_trace(figs: dict[str, Any], lines: list[str], pids: list[int]) -> None:
    """The servers' stalls (``bench.daphne_traced``) per second of the run, beside the
    clients' latency: per process the longest loop stall and GC pauses of each second."""
    t0 = figs["t0_wall"]
    records = [json.loads(line) for line in lines]
    for row in figs["series"]:
        for i, pid in enumerate(pids):
            mine = [r for r in records if r["pid"] == pid and int(r["at"] - t0) == row["s"]]
            lags = [r["lag"] for r in mine if "lag" in r]
            gcs = [r for r in mine if "gc" in r]
            row[f"server{i}_lag_max_ms"] = ms(max(lags)) if lags else 0.0
            row[f"server{i}_gc"] = [[r["gc"], ms(r["s"])] for r in gcs]
    before = [r for r in records if r["at"] < t0]
    figs["trace_before_t0"] = {
        "gc_pauses": len([r for r in before if "gc" in r]),
        "gc_max_ms": ms(max((r["s"] for r in before if "gc" in r), default=0.0)),
        "lag_max_ms": ms(max((r["lag"] for r in before if "lag" in r), default=0.0)),
    }
    worst = sorted(records, key=lambda r: r.get("lag", r.get("s", 0)), reverse=True)[:20]
    figs["trace_worst"] = [{**r, "t": round(r["at"] - t0, 3)} for r in worst]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def direct_topology(p: Params, logs: dict[str, Any]) -> Iterator[tuple[list[int], Any, Any]]:
    """Two Daphnes of one site on a private Redis: (ports, redis, kill the second)."""
    tag = unique_tag("soak")
    with private_redis() as redis:
        env = {**redis_env(tag, redis.url), **SERVER_ENV}
        options: dict[str, Any] = {}
        if p.trace:
            env["SOAK_TRACE_FILE"] = logs["trace_file"] = str(redis.workdir / "trace.jsonl")
            options["daphne"] = TRACED_DAPHNE
        with (
            daphne_site(env, p.rooms, CLIENTS_PER_ROOM, report=logs, **options) as first,
            sibling_process(first) as second,
        ):
            logs["pids"] = [first.pid, second.pid]
            try:
                yield [first.port, second.port], redis, second.kill
            finally:
                if p.trace:
                    logs["trace"] = Path(logs["trace_file"]).read_text().splitlines()
                logs["logs"] = [server_log_counts(s.log_path) for s in (first, second)]


@contextlib.contextmanager
def nginx_topology(p: Params, logs: dict[str, Any]) -> Iterator[tuple[list[int], Any, Any]]:
    """The deployment (``tests.support.topology``: nginx, two web Daphnes, a media Daphne,
    PostgreSQL) on a private Redis: (nginx's port, redis, kill the second web process)."""
    from tests.support.topology import running_topology

    env = {**SERVER_ENV, "LOG_LEVEL": "WARNING"}
    with private_redis() as redis, running_topology(redis_url=redis.url, env=env) as topo:
        topo.manage("shell", "-c", create_rooms_code(p.rooms, CLIENTS_PER_ROOM))
        logs["pids"] = [topo.pid(name) for name in topo.web]
        victim = topo.web[-1]
        try:
            yield [topo.port], redis, lambda: topo.kill(victim)
        finally:
            logs["logs"] = {
                name: server_log_counts(server.log_path) for name, server in topo.processes.items()
            }


def server_log_counts(path: Path) -> dict[str, int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {
        "tracebacks": text.count("Traceback (most recent call last)"),
        "error_111": text.count("Error 111"),
        "errors": dict(log_error_counts(text)),
    }


def run_soak(p: Params) -> dict[str, Any]:
    raise_nofile()
    load_before = uptime()
    logs: dict[str, Any] = {}
    if p.trace and p.via != "direct":
        raise SystemExit("--trace needs --via direct (the deployment runs the units' Daphne)")
    topology = direct_topology if p.via == "direct" else nginx_topology
    with topology(p, logs) as (ports, redis, kill):
        soak = asyncio.run(drive(p, ports, {"redis": redis, "kill": kill}))
    figs = figures(soak, p)
    if p.trace:
        add_trace(figs, logs.pop("trace"), logs["pids"])
    load_after = uptime()
    rows = [
        {"metric": "clients (sockets)", "value": figs["clients"], "unit": "sockets"},
        {"metric": "messages sent", "value": figs["sent"], "unit": "msgs"},
        {"metric": "delivered", "value": figs["delivered"], "unit": "msgs"},
        {"metric": "lost", "value": figs["lost"], "unit": "msgs", "goal": "0 in steady state"},
        {
            "metric": "lost before the first fault",
            "value": figs["steady_state"]["lost"],
            "unit": "msgs",
        },
        {"metric": "duplicated", "value": figs["duplicated"], "unit": "msgs", "goal": 0},
        {"metric": "misdelivered", "value": figs["misdelivered"], "unit": "msgs", "goal": 0},
        {"metric": "out of order", "value": figs["out_of_order"], "unit": "msgs"},
        {
            "metric": "not sent (sender closed / peer unknown)",
            "value": sum(figs["skipped"].values()),
            "unit": "msgs",
        },
        {"metric": "latency p50", "value": figs["latency_ms"]["p50"], "unit": "ms"},
        {"metric": "latency p99", "value": figs["latency_ms"]["p99"], "unit": "ms"},
        {
            "metric": "per-second p99, first 5 s",
            "value": figs["first_seconds_p99_ms"][:5],
            "unit": "ms",
        },
        {
            "metric": "sockets closed by the server",
            "value": figs["sockets_closed"],
            "unit": "sockets",
            "pct": figs["sockets_closed_pct"],
            "codes": figs["close_codes"],
        },
        {
            "metric": "samples with a wrong peer list",
            "value": figs["peer_lists_wrong_samples"],
            "unit": "samples",
            "of": len(figs["presence_samples"]),
        },
        {
            "metric": "samples with a wrong lobby count",
            "value": figs["lobby_wrong_samples"],
            "unit": "samples",
            "of": len(figs["presence_samples"]),
        },
        {"metric": "client loop lag max", "value": figs["client_loop_lag_max_ms"], "unit": "ms"},
    ]
    for fault in figs["faults"]:
        rows.append(
            {
                "metric": f"{fault['fault']} at {fault['t_start']:.1f} s: presence converged after",
                "value": fault["converged_after_s"],
                "unit": "s",
                "goal": f"<= {soak.heartbeat_interval:g} s (one heartbeat interval)",
            }
        )
    headline = (
        f"{figs['clients']} sockets, {figs['sent']} messages: {figs['lost']} lost, "
        f"{figs['duplicated']} duplicated, {figs['misdelivered']} misdelivered, p50 "
        f"{figs['latency_ms']['p50']} / p99 {figs['latency_ms']['p99']} ms; "
        f"{figs['sockets_closed']} sockets closed ({figs['close_codes']})"
    )
    for fault in figs["faults"]:
        headline += f"; {fault['fault']}: presence converged after {fault['converged_after_s']} s"
    parameters = {
        **asdict(p),
        "clients_per_room": CLIENTS_PER_ROOM,
        "heartbeat_interval_s": soak.heartbeat_interval,
        "server_env": SERVER_ENV,
        "topology": "direct: 2 Daphne processes (one SQLite), private redis-server"
        if p.via == "direct"
        else "nginx: tests.support.topology (nginx, 2 web + 1 media Daphne from the "
        "rendered units, PostgreSQL), private redis-server",
        "uptime_before": load_before,
        "uptime_after": load_after,
    }
    return result(
        p.out,
        rows,
        None,
        headline,
        parameters,
        {**figs, "server_logs": logs, "goal": GOAL},
    )


@exit_cleanly_on_sigterm()
def run(quick: bool) -> dict[str, Any]:
    return run_soak(QUICK if quick else FULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_soak", description=__doc__)
    parser.add_argument("--rooms", type=int, default=FULL.rooms)
    parser.add_argument("--seconds", type=float, default=FULL.seconds)
    parser.add_argument("--via", choices=("direct", "nginx"), default=FULL.via)
    parser.add_argument("--redis-restart-at", type=float, default=None)
    parser.add_argument("--redis-down", type=float, default=FULL.redis_down)
    parser.add_argument("--kill-at", type=float, default=None)
    parser.add_argument("--settle", type=float, default=FULL.settle_s)
    parser.add_argument(
        "--phase",
        choices=("spread", "sync"),
        default=FULL.phase,
        help="spread: each client sends at its own random point of the second (the default); "
        "sync: all at once (a burst of 3R messages every second)",
    )
    parser.add_argument(
        "--joins-in-run",
        action="store_true",
        help="start the clock before the joins (each client sends once it has its welcome)",
    )
    parser.add_argument(
        "--tokens",
        choices=("http", "local"),
        default=FULL.tokens,
        help="http: each client gets its token from GET /me/token/ (a page's way); local: "
        "signed in this process, so the servers see nothing before the joins",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="servers record their event-loop stalls and GC pauses (bench.daphne_traced)",
    )
    parser.add_argument("--out", default=NAME, help="results file bench/results/<out>.json")
    args = parser.parse_args(argv)
    p = Params(
        rooms=args.rooms,
        seconds=args.seconds,
        via=args.via,
        redis_restart_at=args.redis_restart_at,
        redis_down=args.redis_down,
        kill_at=args.kill_at,
        settle_s=args.settle,
        phase=args.phase,
        trace=args.trace,
        tokens=args.tokens,
        joins_in_run=args.joins_in_run,
        out=args.out,
    )
    start = time.perf_counter()
    with exit_cleanly_on_sigterm():
        outcome = run_soak(p)
    validate_result(p.out, outcome)
    record = build_record(outcome, False, time.perf_counter() - start)
    path = write_record(record)
    print(report(record))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
