"""Signaling relay: addressed ``offer`` messages through our room socket vs a raw relay.

Three clients join one mesh room; A sends N addressed ``offer`` messages (a ~5 KB SDP) to
B, (1) in lockstep (send, wait until B has it, repeat: one-way latency, both ends in this
process so one clock) and (2) in a burst (N back to back; msg/s until B has them all). C,
also in the room, must receive none of them. Targets, all in the same run, alternating:

* ``raw``: a minimal ``websockets`` relay in its own process (clients register an id;
  a message with ``to`` is parsed, stamped with ``from`` and forwarded to that socket),
  the Python limit for this job;
* ``memory``: one Daphne, in-memory channel layer (the embedded setup);
* ``redis-core`` / ``redis-pubsub``: one Daphne, presence and layer in Redis,
  ``RedisChannelLayer`` / ``RedisPubSubChannelLayer`` (``CHANNEL_LAYER_BACKEND``);
* ``redis-core-2proc`` / ``redis-pubsub-2proc``: two Daphnes on one Redis, A on the first,
  B and C on the second: the cross-process case Redis is there for.

Per round every target gets fresh sockets in a fresh room; lockstep and probe run in chunks
that alternate between targets, so a burst of other load on the (shared) machine hits all
of them alike; then each target gets one burst. Medians over rounds are reported.

The room socket allows bursts of 120 and 40 msg/s per connection; that would be all this
measured, so the Daphnes run through ``bench.daphne_unlimited``, which lifts
``RoomConsumer.rate_limit`` in the server process (recorded in the JSON).

Where the time goes (lockstep): a *probe* sends the same 5 KB offer addressed to a peer id
that is not in the room, which the server answers with an ``unknown-peer`` error on the
sender's own socket: the socket, parsing and validation without the channel layer hop.
Server (and Redis) CPU per message tell computing from waiting.

The Redis servers get ``socket_timeout=30`` in their ``REDIS_URL`` (see
``SERVER_SOCKET_TIMEOUT_S``): with redis-py's default of 5 s an idle ``RedisChannelLayer``
consumer dies after 5 s, which ends the cross-process run before it starts.

``raw_relay_main`` is the raw relay, run by ``bench.support.peer_process``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.clients import Endpoint, PhaseFailed, RelayClient, relay_connect
from bench.daphne_unlimited import UNLIMITED_DAPHNE, check_lifted
from bench.offers import make_sdp, offer_text, sdp_seq
from bench.runner import result
from bench.support import (
    EMBEDDED_ENV,
    HOST,
    cpu_seconds,
    daphne_site,
    delete_keys,
    make_tokens,
    ms,
    peer_process,
    percentile,
    redis_env,
    redis_url,
    room_slug,
    sibling_process,
)

NAME = "signaling"

ROOM_CAPACITY = 3  # mesh
UNKNOWN_PEER = "000000000000"  # well-formed, never assigned to anyone in the room

#: Measured on this machine before any code (issue 4), and the issue's target.
REFERENCE = {
    "raw_relay": {"lockstep_msgs_per_s": 4000, "p99_ms": 0.45},
    "naive_channels_group_relay_redis": {"lockstep_msgs_per_s": 415, "p99_ms": 8.6},
}
TARGET_VS_RAW = 0.5

TARGETS = {
    "raw": "raw websockets relay (1 process)",
    "memory": "Daphne, in-memory layer (1 process; relay delivered in-process)",
    "redis-core": "Daphne, RedisChannelLayer (1 process; relay delivered in-process)",
    "redis-pubsub": "Daphne, RedisPubSubChannelLayer (1 process; relay delivered in-process)",
    "redis-core-2proc": "2 Daphnes, RedisChannelLayer (A on one, B+C on other; relay via Redis)",
    "redis-pubsub-2proc": (
        "2 Daphnes, RedisPubSubChannelLayer (A on one, B+C on other; relay via Redis)"
    ),
}


@dataclass(frozen=True)
class Params:
    lockstep: int = 2000  # messages per lockstep phase
    burst: int = 5000  # messages per burst phase
    warmup: int = 200  # lockstep messages before measuring, per target and round
    probe: int = 1000  # unknown-peer round trips (where the time goes)
    rounds: int = 3  # fresh sockets (and room) per round; target order rotated each round
    chunks: int = 10  # lockstep and probe run in this many chunks, alternating targets
    probe_reset_every: int = 10  # a ping between probes (20 errors in a row close a socket)
    stall_s: float = 10.0  # a phase with no progress for this long ends (messages lost)
    phase_limit_s: float = 180.0
    connect_limit_s: float = 20.0
    settle_s: float = 0.3  # after the burst, before checking that C got nothing


FULL = Params()
QUICK = Params(lockstep=200, burst=500, warmup=30, probe=60, rounds=1, chunks=4)


# --- the raw relay (run as its own process) ---------------------------------------------------


def raw_relay_main(port: int) -> None:
    """A bare ``websockets`` relay: the Python limit for addressed delivery.

    A client's first message is ``{"type": "register", "id": <12 hex>}``, answered with
    ``welcome``. Then a message with a known ``to`` is parsed, stamped with ``from`` and
    forwarded to that socket only; an unknown ``to`` gets ``unknown-peer``; ``ping`` gets
    ``pong``. No validation, no presence, no limits.
    """
    from websockets.asyncio.server import serve

    clients: dict[str, Any] = {}
    unknown = json.dumps({"type": "error", "code": "unknown-peer"}, separators=(",", ":"))
    pong = json.dumps({"type": "pong"})

    async def handler(ws: Any) -> None:
        hello = json.loads(await ws.recv())
        me = str(hello["id"])
        clients[me] = ws
        welcome = {"type": "welcome", "you": {"peer": me}, "peers": sorted(set(clients) - {me})}
        await ws.send(json.dumps(welcome, separators=(",", ":")))
        try:
            async for text in ws:
                message = json.loads(text)
                target = clients.get(message.pop("to", None))
                if target is not None:
                    message["from"] = me
                    await target.send(json.dumps(message, separators=(",", ":")))
                elif message.get("type") == "ping":
                    await ws.send(pong)
                else:
                    await ws.send(unknown)
        finally:
            clients.pop(me, None)

    async def main() -> None:
        async with serve(handler, HOST, port, compression=None, max_size=2**20):
            print("ready", flush=True)
            await asyncio.Future()

    asyncio.run(main())


# --- servers ----------------------------------------------------------------------------------

#: Every Daphne of the run, on top of the shared launcher's DEBUG, own SQLite and media.
SERVER_ENV = {
    "DATABASE_URL": "",
    # presence is refreshed by heartbeats every 10 s; these clients only relay, so give
    # their places a long life instead of sending pings mid-measurement
    "PRESENCE_TTL": "3600",
    # tokens are minted once at the start; a full run on a loaded box outlasts the
    # default 15 min (seen: every join of rounds 2-3 refused with token-expired)
    "WS_TOKEN_MAX_AGE": "14400",
}


def site_servers(
    stack: contextlib.ExitStack, label: str, env: dict[str, str], count: int, rooms: int
) -> dict[str, Any]:
    """``count`` Daphnes of one site (one SQLite, ``rooms`` rooms made once), rate limit
    lifted (``bench.daphne_unlimited``); by label."""
    first = stack.enter_context(
        daphne_site({**SERVER_ENV, **env}, rooms, ROOM_CAPACITY, daphne=UNLIMITED_DAPHNE)
    )
    servers = [first, *(stack.enter_context(sibling_process(first)) for _ in range(count - 1))]
    for server in servers:
        check_lifted(server)
    return {f"{label}-{i}": server for i, server in enumerate(servers)}


# --- Redis --------------------------------------------------------------------------------------


#: redis-py 8 reads with a 5 s socket timeout by default: exactly the 5 s RedisChannelLayer
#: blocks in BZPOPMIN on an idle channel, so the read times out first and the consumer dies
#: (seen here: in the cross-process case A's process receives nothing, and A's socket was
#: closed 5 s after joining). The servers of every Redis target get a longer timeout.
SERVER_SOCKET_TIMEOUT_S = 30


def server_redis_url(url: str) -> str:
    if "socket_timeout=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}socket_timeout={SERVER_SOCKET_TIMEOUT_S}"


def redis_cpu(url: str) -> float | None:
    """Redis server CPU seconds (user + sys) so far; shared server, so only indicative."""
    import redis

    try:
        client = redis.Redis.from_url(url)
        try:
            info = client.info("cpu")
        finally:
            client.close()
    except redis.RedisError:
        return None
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# --- one measurement --------------------------------------------------------------------------


@dataclass
class Sample:
    """One target, one round."""

    target: str
    round: int
    lockstep_n: int = 0
    lockstep_s: float = float("nan")
    lockstep_rate: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    probe_n: int = 0
    probe_p50_ms: float = float("nan")
    probe_p99_ms: float = float("nan")
    burst_n: int = 0
    burst_received: int = 0
    burst_s: float = float("nan")
    burst_rate: float = float("nan")
    burst_send_s: float = float("nan")
    server_cpu_us_lockstep: float = float("nan")
    server_cpu_us_burst: float = float("nan")
    redis_cpu_us_lockstep: float | None = None
    redis_cpu_us_burst: float | None = None
    client_cpu_us_lockstep: float = float("nan")
    client_cpu_us_burst: float = float("nan")
    c_signals: int = 0
    b_wrong_from: int = 0
    b_out_of_order: int = 0
    b_missing: int = 0
    b_duplicates: int = 0
    errors_at_a: int = 0
    failure: str | None = None  # "<phase>: <why>"; figures of earlier phases still count
    phase: str = "connect"
    notes: list[str] = field(default_factory=list)


@dataclass
class Setup:
    """How to reach one target: endpoints for A, B, C per round; its server processes by
    label (PIDs to read CPU from, logs to quote on a failure)."""

    key: str
    endpoints: list[tuple[Endpoint, Endpoint, Endpoint]]
    servers: dict[str, Any]
    redis: str | None = None

    @property
    def pids(self) -> list[int]:
        return [server.pid for server in self.servers.values()]


class Meter:
    """CPU seconds of the servers (and Redis) and of this process, added up over chunks."""

    def __init__(self, pids: list[int], redis: str | None) -> None:
        self.pids, self.redis = pids, redis
        self.totals = [0.0, 0.0, 0.0]  # server, redis, client
        self.redis_known = redis is not None

    def reading(self) -> tuple[float, float | None, float]:
        server = sum(cpu_seconds(p) for p in self.pids)
        return server, redis_cpu(self.redis) if self.redis else None, time.process_time()

    def add(self, start: tuple[float, float | None, float]) -> None:
        end = self.reading()
        self.totals[0] += end[0] - start[0]
        if start[1] is None or end[1] is None:
            self.redis_known = False
        else:
            self.totals[1] += end[1] - start[1]
        self.totals[2] += end[2] - start[2]

    def per_message_us(self, n: int) -> tuple[float, float | None, float]:
        if not n:
            return float("nan"), None, float("nan")
        server, redis, client = (round(t / n * 1e6, 1) for t in self.totals)
        return server, redis if self.redis_known else None, client


async def wait_for_count(client: RelayClient, future: asyncio.Future[float], p: Params) -> float:
    """Await ``future``; a stall (no new offer for ``stall_s``) or the limit ends it."""
    deadline = time.monotonic() + p.phase_limit_s
    seen, last_progress = len(client.offers), time.monotonic()
    while True:
        done, _ = await asyncio.wait({future}, timeout=1.0)
        if done:
            return future.result()
        now = time.monotonic()
        if len(client.offers) != seen:
            seen, last_progress = len(client.offers), now
        if now - last_progress > p.stall_s or now > deadline:
            future.cancel()
            raise PhaseFailed(
                f"{client.name}: {client.want - len(client.offers)} of the messages never "
                f"arrived (no progress for {now - last_progress:.0f} s)"
            )


async def lockstep(a: RelayClient, b: RelayClient, texts: list[str], p: Params) -> list[float]:
    """Send one, wait until B has it, repeat; one-way latencies in seconds."""
    clock = time.perf_counter
    latencies = []
    async with asyncio.timeout(p.phase_limit_s):
        for text in texts:
            arrived = b.arm(1)
            start = clock()
            await a.ws.send(text)
            latencies.append(await arrived - start)
    return latencies


async def probe(a: RelayClient, texts: list[str], p: Params) -> list[float]:
    """Round trips of an offer to an unknown peer (answered on A's own socket)."""
    clock = time.perf_counter
    ping = json.dumps({"type": "ping"})
    rtts = []
    async with asyncio.timeout(p.phase_limit_s):
        for i, text in enumerate(texts):
            if i % p.probe_reset_every == 0:  # a good message resets the server's error count
                reply = a.expect_reply()
                await a.ws.send(ping)
                await reply
            reply = a.expect_reply()
            start = clock()
            await a.ws.send(text)
            at, message = await reply
            if message.get("code") != "unknown-peer":
                raise PhaseFailed(f"probe got {message}")
            rtts.append(at - start)
    a.reply = None
    return rtts


async def burst(a: RelayClient, b: RelayClient, texts: list[str], p: Params) -> tuple[float, float]:
    """Send all back to back; (seconds until B had them all, seconds to send them)."""
    arrived = b.arm(len(texts))
    start = time.perf_counter()
    for text in texts:
        await a.ws.send(text)
    sent = time.perf_counter() - start
    return await wait_for_count(b, arrived, p) - start, sent


def check_b(b: RelayClient, a_peer: str, first_seq: int, count: int, sample: Sample) -> None:
    """Parse B's offers (after the clock): sender, order, losses, duplicates."""
    seqs = []
    for text in b.offers:
        message = json.loads(text)
        if message.get("from") != a_peer:
            sample.b_wrong_from += 1
        seqs.append(sdp_seq(message.get("sdp", "")))
    wanted = [s for s in seqs if s is not None and first_seq <= s < first_seq + count]
    sample.b_missing += count - len(set(wanted))
    sample.b_duplicates += len(wanted) - len(set(wanted))
    sample.b_out_of_order += sum(1 for x, y in itertools.pairwise(wanted) if y < x)


class Live:
    """One target's three clients during a round, and what has been measured so far."""

    def __init__(self, setup: Setup, round_no: int) -> None:
        self.setup = setup
        self.sample = Sample(setup.key, round_no)
        self.clients: list[RelayClient] = []
        self.seq = 0
        self.latencies: list[float] = []
        self.lockstep_s = 0.0
        self.rtts: list[float] = []
        self.meter = Meter(setup.pids, setup.redis)

    @property
    def ok(self) -> bool:
        return self.sample.failure is None and len(self.clients) == 3

    def batch(self, to: str, n: int) -> list[str]:
        """The next ``n`` offers (consecutive o= versions), serialised before timing."""
        self.seq += n
        return [offer_text(to, s) for s in range(self.seq - n, self.seq)]

    async def step(self, phase: str, work: Any) -> Any:
        """Run one phase's coroutine; a failure is recorded and ends this target's round."""
        self.sample.phase = phase
        try:
            return await work
        except Exception as exc:  # a closed socket, a stall, a refused handshake: go on
            self.sample.failure = f"{phase}: {type(exc).__name__}: {exc}"
            await asyncio.sleep(0.5)  # let the servers write down why
            for label, server in self.setup.servers.items():  # a traceback's exception lines
                said = [line for line in server.log().splitlines() if line[:1].strip()]
                self.sample.notes += [f"{label}: {line}" for line in said[-4:]]
            return None

    async def join(self, p: Params) -> None:
        ep_a, ep_b, ep_c = self.setup.endpoints[self.sample.round]
        for name, endpoint in (("A", ep_a), ("B", ep_b), ("C", ep_c)):
            self.clients.append(await relay_connect(name, endpoint, p.connect_limit_s))
        a, b, c = self.clients
        a.partner = b
        if ep_a.token is not None:  # our server routes by what A's consumer has heard
            async with asyncio.timeout(p.connect_limit_s):
                await a.heard_of({b.peer_id, c.peer_id})

    async def warm_up(self, p: Params) -> None:
        a, b, _ = self.clients
        await lockstep(a, b, self.batch(b.peer_id, p.warmup), p)

    async def lockstep_chunk(self, n: int, p: Params) -> None:
        a, b, _ = self.clients
        texts = self.batch(b.peer_id, n)
        start = self.meter.reading()
        t0 = time.perf_counter()
        self.latencies += await lockstep(a, b, texts, p)
        self.lockstep_s += time.perf_counter() - t0
        self.meter.add(start)

    def finish_lockstep(self, first_seq: int) -> None:
        s, a, b = self.sample, self.clients[0], self.clients[1]
        n = len(self.latencies)
        s.lockstep_n, s.lockstep_s = n, round(self.lockstep_s, 3)
        s.lockstep_rate = round(n / self.lockstep_s, 1)
        s.p50_ms, s.p99_ms = ms(percentile(self.latencies, 50)), ms(percentile(self.latencies, 99))
        s.max_ms = ms(max(self.latencies))
        cpu = self.meter.per_message_us(n)
        s.server_cpu_us_lockstep, s.redis_cpu_us_lockstep, s.client_cpu_us_lockstep = cpu
        check_b(b, a.peer_id, first_seq, n, s)

    async def probe_chunk(self, n: int, p: Params) -> None:
        self.rtts += await probe(self.clients[0], self.batch(UNKNOWN_PEER, n), p)

    def finish_probe(self) -> None:
        s = self.sample
        s.probe_n = len(self.rtts)
        s.probe_p50_ms, s.probe_p99_ms = (
            ms(percentile(self.rtts, 50)),
            ms(percentile(self.rtts, 99)),
        )

    async def burst(self, p: Params) -> None:
        s, (a, b, _) = self.sample, self.clients
        texts = self.batch(b.peer_id, p.burst)
        first, before = self.seq - p.burst, len(b.offers)
        s.burst_n = p.burst
        meter = Meter(self.setup.pids, self.setup.redis)
        start = meter.reading()
        try:
            took, sent = await burst(a, b, texts, p)
        finally:
            s.burst_received = len(b.offers) - before
        meter.add(start)
        s.server_cpu_us_burst, s.redis_cpu_us_burst, s.client_cpu_us_burst = meter.per_message_us(
            p.burst
        )
        s.burst_s, s.burst_send_s = round(took, 3), round(sent, 3)
        s.burst_rate = round(p.burst / took, 1)
        check_b(b, a.peer_id, first, p.burst, s)

    async def close(self) -> None:
        s = self.sample
        if len(self.clients) == 3:
            s.c_signals = self.clients[2].signals()
        if self.clients:  # the probe's unknown-peer replies are expected; anything else is not
            s.errors_at_a = sum(
                1
                for m in self.clients[0].others
                if m.get("type") == "error" and m.get("code") != "unknown-peer"
            )
        for client in self.clients:
            await client.close()


def chunks(total: int, count: int) -> list[int]:
    """``total`` split into ``count`` near-equal positive parts."""
    count = max(1, min(count, total))
    return [total // count + (1 if i < total % count else 0) for i in range(count)]


def rotated(items: list[Any], by: int) -> list[Any]:
    by %= len(items) or 1
    return items[by:] + items[:by]


async def run_round(setups: dict[str, Setup], round_no: int, p: Params) -> dict[str, Sample]:
    """Every target in one round: all join, then lockstep and probe in interleaved chunks
    (so a burst of other load on the machine hits every target alike), then one burst each.
    """
    lives = [Live(setups[key], round_no) for key in rotated(list(setups), round_no)]
    try:
        for live in lives:
            await live.step("join", live.join(p))
        for live in lives:
            if live.ok:
                await live.step("warm-up", live.warm_up(p))
        firsts = {id(live): live.seq for live in lives}
        for i, n in enumerate(chunks(p.lockstep, p.chunks)):
            for live in rotated(lives, i):
                if live.ok:
                    await live.step("lockstep", live.lockstep_chunk(n, p))
        for live in lives:
            if live.latencies and live.sample.phase == "lockstep":
                live.finish_lockstep(firsts[id(live)])
        for i, n in enumerate(chunks(p.probe, p.chunks)):
            for live in rotated(lives, i):
                if live.ok:
                    await live.step("probe", live.probe_chunk(n, p))
        for live in lives:
            if live.rtts:
                live.finish_probe()
        for live in lives:
            if live.ok:
                await live.step("burst", live.burst(p))
        await asyncio.sleep(p.settle_s)  # anything misdelivered to C arrives meanwhile
    finally:
        for live in lives:
            await live.close()
    return {live.setup.key: live.sample for live in lives}


# --- the benchmark ------------------------------------------------------------------------------


def room_endpoints(
    ports: tuple[int, int, int], slug: str, tokens: Iterator[str]
) -> tuple[Endpoint, Endpoint, Endpoint]:
    a, b, c = (Endpoint(port, slug, next(tokens)) for port in ports)
    return a, b, c


def start_all(stack: contextlib.ExitStack, p: Params, tag: str, url: str) -> dict[str, Any]:
    """Every server of the run; returns the setups per target and the commands used."""
    tokens = iter(make_tokens(3 * 2 * 3 * p.rounds, "sig-bench"))
    rounds = range(p.rounds)
    setups: dict[str, Setup] = {}

    raw = stack.enter_context(peer_process("bench.bench_signaling:raw_relay_main"))
    setups["raw"] = Setup(
        "raw", [tuple(Endpoint(raw.port) for _ in range(3)) for _ in rounds], {"raw": raw}
    )

    single = [room_slug(r) for r in rounds]
    cross = [room_slug(p.rounds + r) for r in rounds]
    mem = site_servers(stack, "memory", EMBEDDED_ENV, 1, 2 * p.rounds)
    (port,) = (server.port for server in mem.values())
    setups["memory"] = Setup(
        "memory", [room_endpoints((port,) * 3, s, tokens) for s in single], mem
    )
    for backend in ("core", "pubsub"):
        env = {**redis_env(f"{tag}-{backend}", url), "CHANNEL_LAYER_BACKEND": backend}
        both = site_servers(stack, f"redis-{backend}", env, 2, 2 * p.rounds)
        one, two = (server.port for server in both.values())
        setups[f"redis-{backend}"] = Setup(
            f"redis-{backend}",
            [room_endpoints((one,) * 3, s, tokens) for s in single],
            both,
            url,
        )
        setups[f"redis-{backend}-2proc"] = Setup(
            f"redis-{backend}-2proc",
            [room_endpoints((one, two, two), s, tokens) for s in cross],
            both,
            url,
        )
    daphne = next(iter(mem.values())).command()
    return {
        "setups": setups,
        "commands": {
            "raw": raw.command,
            "daphne": " ".join(["python", *daphne[1:]]).replace(f" {port} ", " <port> "),
        },
    }


def med(samples: list[Sample], attr: str) -> float | None:
    values = [getattr(s, attr) for s in samples]
    values = [v for v in values if v is not None and v == v]  # NaN: phase not reached
    return round(statistics.median(values), 3) if values else None


def per_round(samples: list[Sample], attr: str) -> list[Any]:
    values = [getattr(s, attr) for s in samples]
    return [v if v is not None and v == v else None for v in values]


def summarise(samples: dict[str, list[Sample]]) -> dict[str, dict[str, Any]]:
    """Medians over rounds per target, ratios vs raw, and the lockstep breakdown."""
    out: dict[str, dict[str, Any]] = {}
    for key, rows in samples.items():
        out[key] = {
            attr: med(rows, attr)
            for attr in (
                "lockstep_rate",
                "p50_ms",
                "p99_ms",
                "burst_rate",
                "probe_p50_ms",
                "server_cpu_us_lockstep",
                "server_cpu_us_burst",
                "redis_cpu_us_lockstep",
                "redis_cpu_us_burst",
                "client_cpu_us_lockstep",
                "client_cpu_us_burst",
            )
        }
        out[key]["failures"] = [s.failure for s in rows if s.failure]
    raw = out.get("raw", {})
    for figures in out.values():
        for rate in ("lockstep_rate", "burst_rate"):
            mine, peer = figures.get(rate), raw.get(rate)
            figures[f"{rate}_vs_raw"] = round(mine / peer, 3) if mine and peer else None
        if figures["p50_ms"] is not None and figures["probe_p50_ms"] is not None:
            figures["breakdown_ms"] = {
                "one_way_p50": figures["p50_ms"],
                "socket_parse_validate_rtt_p50": figures["probe_p50_ms"],
                "layer_hop_and_second_consumer": round(
                    figures["p50_ms"] - figures["probe_p50_ms"], 3
                ),
                "probe_extra_vs_raw_probe": (
                    round(figures["probe_p50_ms"] - raw["probe_p50_ms"], 3)
                    if raw.get("probe_p50_ms") is not None
                    else None
                ),
            }
    return out


def table_rows(samples: dict[str, list[Sample]], summary: dict[str, Any]) -> list[dict]:
    rows: list[dict[str, Any]] = []
    for key, figures in summary.items():
        for metric, attr, unit in (
            ("lockstep msg/s", "lockstep_rate", "msg/s"),
            ("lockstep p50", "p50_ms", "ms"),
            ("lockstep p99", "p99_ms", "ms"),
            ("burst msg/s", "burst_rate", "msg/s"),
            ("probe rtt p50 (no layer)", "probe_p50_ms", "ms"),
            ("server cpu/msg lockstep", "server_cpu_us_lockstep", "us"),
        ):
            row: dict[str, Any] = {
                "metric": metric,
                "value": figures[attr],
                "unit": unit,
                "target": key,
            }
            if attr in ("lockstep_rate", "burst_rate"):
                row["vs_raw"] = figures[f"{attr}_vs_raw"]
            row["rounds"] = per_round(samples[key], attr)
            rows.append(row)
    return rows


async def run_rounds(setups: dict[str, Setup], p: Params) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {key: [] for key in setups}
    for r in range(p.rounds):
        got = await run_round(setups, r, p)
        for key in setups:
            sample = got[key]
            samples[key].append(sample)
            status = (
                f"lockstep {sample.lockstep_rate:.0f}/s p50 {sample.p50_ms} p99 {sample.p99_ms}"
                f" ms; probe p50 {sample.probe_p50_ms} ms; burst {sample.burst_rate:.0f}/s"
            )
            if sample.failure:
                status += f"; FAILED in {sample.failure}"
            print(f"  round {r + 1}/{p.rounds} {key}: {status}", file=sys.stderr, flush=True)
    return samples


def run(quick: bool) -> dict[str, Any]:
    p = QUICK if quick else FULL
    url = redis_url()
    tag = f"rtcsite-bench-sig-{secrets.token_hex(4)}"
    sdp_bytes = len(make_sdp(0).encode())
    frame_bytes = len(offer_text("0" * 12, 0).encode())
    deleted = 0
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        try:
            started_at = time.perf_counter()
            servers = start_all(stack, p, tag, server_redis_url(url))
            setup_s = time.perf_counter() - started_at
            samples = asyncio.run(run_rounds(servers["setups"], p))
        finally:
            stack.close()  # stop every server (by PID) before touching Redis keys
            deleted = delete_keys(tag, url)
    summary = summarise(samples)
    rows = table_rows(samples, summary)

    checks = {
        key: {
            "c_received_signals": [s.c_signals for s in rows_],
            "b_wrong_from": [s.b_wrong_from for s in rows_],
            "burst_received": [f"{s.burst_received}/{s.burst_n}" for s in rows_],
            "b_missing": [s.b_missing for s in rows_],
            "b_duplicates": [s.b_duplicates for s in rows_],
            "b_out_of_order": [s.b_out_of_order for s in rows_],
            "unexpected_errors_at_a": [s.errors_at_a for s in rows_],
            "failures": [s.failure for s in rows_],
        }
        for key, rows_ in samples.items()
    }
    best = max(
        ("redis-core-2proc", "redis-pubsub-2proc"),
        key=lambda k: summary[k]["lockstep_rate"] or 0.0,
    )
    ratio = summary[best]["lockstep_rate_vs_raw"]
    layer = {"redis-core-2proc": "RedisChannelLayer", "redis-pubsub-2proc": "RedisPubSub"}[best]
    raw_rate = summary["raw"]["lockstep_rate"] or float("nan")
    best_rate = summary[best]["lockstep_rate"] or float("nan")
    verdict = "meets" if ratio is not None and ratio >= TARGET_VS_RAW else "misses"
    same = summary["redis-pubsub"]
    same_verdict = "meets" if (same["lockstep_rate_vs_raw"] or 0) >= TARGET_VS_RAW else "misses"
    headline = (
        f"cross-process Redis relay ({layer}) {best_rate:.0f} msg/s lockstep vs raw websockets "
        f"relay {raw_rate:.0f} msg/s -> {ratio}x ({verdict} the {TARGET_VS_RAW}x target); "
        f"same process with Redis (in-process delivery) {same['lockstep_rate'] or 0:.0f} msg/s "
        f"-> {same['lockstep_rate_vs_raw']}x ({same_verdict} it); "
        f"median of {p.rounds} round(s), {p.lockstep} lockstep + {p.burst} burst messages of "
        f"{frame_bytes} bytes; server rate limit lifted"
    )
    parameters = {
        **asdict(p),
        "targets": TARGETS,
        "sdp_bytes": sdp_bytes,
        "frame_bytes": frame_bytes,
        "room_capacity": ROOM_CAPACITY,
        "placement": {
            "single": "A, B, C on the same server",
            "2proc": "A on server 1; B and C on server 2 (C next to the receiver)",
        },
        "rate_limit": {
            "lifted": True,
            "server_value": "RoomConsumer.rate_limit = (1e9, 10**9) via bench.daphne_unlimited",
            "production_value": "bursts of 120, 40 msg/s sustained per connection",
            "why": "the limit would cap every figure at 40 msg/s; this measures throughput",
        },
        "server_env": {
            "DEBUG": "1",
            "PRESENCE_TTL": "3600 (no heartbeats needed mid-measurement)",
            "LOG_LEVEL": "WARNING",
            "SQLITE_PATH": "<temp>",
            "REDIS_URL": f"{server_redis_url(url)} (Redis targets), '' (memory)",
            "socket_timeout": (
                f"{SERVER_SOCKET_TIMEOUT_S} s instead of redis-py's default 5 s, which "
                "equals RedisChannelLayer's BZPOPMIN block and kills idle consumers"
            ),
            "CHANNEL_LAYER_PREFIX/PRESENCE_KEY_PREFIX": f"{tag}-<backend>-...",
        },
        "commands": servers["commands"],
        "client": (
            "websockets asyncio client, one process, compression off (Daphne has none), "
            "clock: time.perf_counter in the same process for send and receipt"
        ),
        "order": (
            "per round: all targets join; warm-up each; lockstep in `chunks` chunks and "
            "then the probe likewise, alternating targets chunk by chunk (order rotated); "
            "then one burst per target"
        ),
        "ratio_means": "lockstep msg/s of the faster Redis layer, cross-process, / raw",
        "local_delivery": (
            "SIGNALING_LOCAL_DELIVERY on (the default): a relay between two sockets of one "
            "process skips the channel layer (signaling/local.py), so the 1-process targets "
            "measure that path and the -2proc targets the layer (Redis) path"
        ),
    }
    detail = {
        "reference_before_code": REFERENCE,
        "target_vs_raw": TARGET_VS_RAW,
        "summary": summary,
        "checks": {**checks, "redis_keys_deleted": deleted, "setup_s": round(setup_s, 1)},
        "load_average": {  # 1/5/15 min: other work on the machine during the run
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "samples": {key: [asdict(s) for s in rows_] for key, rows_ in samples.items()},
    }
    return result(NAME, rows, ratio, headline, parameters, detail)
