"""Presence: join -> lobby update latency under load, and Redis presence operations/s.

Part 1, latency. Two Daphne processes run at once: one with ``REDIS_URL`` (Redis presence +
channels-redis layer), one embedded (memory presence + in-memory layer). Each holds N room
sockets (3 per mesh room of capacity 4, heartbeating every ``heartbeat_interval`` as real
clients do) and a few lobby sockets (observers). Then, alternating between the two servers in
batches, one new client at a time joins a room (its 4th place) and leaves again. Latency:
from just before the TCP connect of the joining socket until each lobby observer received
the matching ``presence`` delta (matched by the peer id from ``welcome``); leave latency from
sending the close frame until each observer saw the ``leave``. Target: join p99 <= 50 ms.

Part 2, throughput. ``RedisPresenceBackend`` driven directly (track, refresh, untrack of K
presences, 64 in flight) vs raw ZADDs to one key in the same run: pipelined (depth 16, 64 in
flight; the "redis-benchmark" shape), unpipelined (one ZADD per round trip, 64 in flight), and
the ``redis-benchmark`` binary (-P 16 and -P 1) when installed. Same operation count for all.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.clients import WsClient, close_all, ws_connect
from bench.support import (
    EMBEDDED_ENV,
    daphne_site,
    delete_keys,
    exit_cleanly_on_sigterm,
    make_tokens,
    ms,
    percentile,
    process_figures,
    raise_nofile,
    redis_env,
    redis_host_port,
    redis_url,
    room_slug,
    unique_tag,
)

NAME = "presence"
TARGET_P99_MS = 50.0
SETUPS = ("redis", "memory")


@dataclass(frozen=True)
class Params:
    clients: int = 1000  # background room sockets per server
    per_room: int = 3  # background sockets per room (the measured join takes the 4th place)
    room_capacity: int = 4
    lobby_observers: int = 3
    fill_concurrency: int = 16
    joins: int = 300  # measured join+leave cycles per server
    batches: int = 6  # alternations between the two servers
    think_s: float = 0.02  # pause between cycles
    delta_timeout_s: float = 10.0
    ops_count: int = 20_000  # presences tracked, refreshed, untracked per round
    ops_concurrency: int = 64
    pipeline_depth: int = 16
    ops_rounds: int = 3


FULL = Params()
QUICK = Params(clients=100, joins=40, batches=2, ops_count=2000, ops_rounds=1)


# --- part 1: join -> lobby latency --------------------------------------------------------------


class Lobby:
    """The observers of one server: when each saw each ``presence`` delta."""

    def __init__(self, observers: int) -> None:
        self.observers = observers
        self.seen: dict[tuple[str, str], list[float]] = {}
        self.waiters: dict[tuple[str, str], asyncio.Future[list[float]]] = {}

    def on_message(self, _client: WsClient, text: str) -> None:
        now = time.perf_counter()
        msg = json.loads(text)
        if msg.get("type") != "presence":
            return
        key = (msg["event"], msg["peer"]["peer"])
        times = self.seen.setdefault(key, [])
        times.append(now)
        if len(times) >= self.observers:
            waiter = self.waiters.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(times)

    async def wait(self, key: tuple[str, str], limit_s: float) -> list[float]:
        """Arrival times at every observer (some may already have arrived)."""
        try:
            times = self.seen.get(key, [])
            if len(times) >= self.observers:
                return times
            waiter = asyncio.get_running_loop().create_future()
            self.waiters[key] = waiter
            async with asyncio.timeout(limit_s):
                return await waiter
        finally:
            self.waiters.pop(key, None)
            self.seen.pop(key, None)


@dataclass
class Site:
    """One server under test and the sockets the benchmark holds on it."""

    setup: str
    port: int
    pid: int
    lobby: Lobby
    observers: list[WsClient] = field(default_factory=list)
    background: list[WsClient] = field(default_factory=list)
    heartbeat_interval: float = 10.0
    samples: dict[str, list[float]] = field(default_factory=dict)
    batch_p99_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, name: str, values: list[float]) -> None:
        self.samples.setdefault(name, []).extend(values)


def room_path(room: int, token: str) -> str:
    return f"/ws/rooms/{room_slug(room)}/?token={token}"


async def join_and_wait(site: Site, room: int, token: str, limit_s: float) -> WsClient:
    """Join ``room``; record welcome and lobby latencies from just before the connect."""
    t0 = time.perf_counter()
    client = await ws_connect(site.port, room_path(room, token), frozenset({"welcome"}))
    welcome = client.ready.result()
    site.add("welcome", [time.perf_counter() - t0])
    site.heartbeat_interval = float(welcome.get("heartbeat_interval") or 10)
    times = await site.lobby.wait(("join", welcome["you"]["peer"]), limit_s)
    site.add("join", [t - t0 for t in times])
    site.add("join_all", [max(times) - t0])
    return client


async def fill(site: Site, tokens: list[str], p: Params) -> float:
    """Connect the background sockets, ``fill_concurrency`` at a time; their join latencies
    are kept apart (``fill_join``): they measure a burst, not an isolated join."""
    todo = iter(enumerate(tokens))
    start = time.perf_counter()

    async def runner() -> None:
        for i, token in todo:
            t0 = time.perf_counter()
            try:
                client = await ws_connect(
                    site.port, room_path(i // p.per_room, token), frozenset({"welcome"})
                )
            except Exception as exc:  # reported, not fatal
                site.errors.append(f"fill: {type(exc).__name__}: {exc}"[:160])
                continue
            site.background.append(client)
            peer = client.ready.result()["you"]["peer"]
            try:
                times = await site.lobby.wait(("join", peer), p.delta_timeout_s)
            except TimeoutError:
                site.errors.append("fill: lobby delta timed out")
                continue
            site.add("fill_join", [t - t0 for t in times])

    await asyncio.gather(*(runner() for _ in range(p.fill_concurrency)))
    return time.perf_counter() - start


async def heartbeats(site: Site) -> None:
    """Every background socket pings once per ``heartbeat_interval``, spread evenly."""
    tick, cursor = 0.1, 0
    while True:
        clients = site.background
        if clients:
            step = max(1, math.ceil(len(clients) * tick / site.heartbeat_interval))
            for client in clients[cursor : cursor + step]:
                client.send_json({"type": "ping", "t": time.time()})
            cursor = (cursor + step) % len(clients)
        await asyncio.sleep(tick)


async def join_leave_cycle(site: Site, room: int, token: str, p: Params) -> None:
    client = await join_and_wait(site, room, token, p.delta_timeout_s)
    peer = client.ready.result()["you"]["peer"]
    t0 = time.perf_counter()
    client.close()
    times = await site.lobby.wait(("leave", peer), p.delta_timeout_s)
    site.add("leave", [t - t0 for t in times])
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await client.closed


async def latency_part(sites: dict[str, Site], p: Params) -> dict[str, Any]:
    rng = random.Random(3)
    full_rooms = p.clients // p.per_room
    for site in sites.values():
        for token in make_tokens(p.lobby_observers, "observer"):
            site.observers.append(
                await ws_connect(
                    site.port,
                    f"/ws/lobby/?token={token}",
                    frozenset({"lobby-state"}),
                    on_message=site.lobby.on_message,
                )
            )
    beats = [asyncio.create_task(heartbeats(site)) for site in sites.values()]
    fill_s = {}
    try:
        for name, site in sites.items():
            fill_s[name] = round(await fill(site, make_tokens(p.clients), p), 3)
        per_batch = max(1, p.joins // p.batches)
        tokens = iter(make_tokens(per_batch * p.batches * len(sites), "joiner"))
        for batch in range(p.batches):
            order = list(sites) if batch % 2 == 0 else list(reversed(sites))
            for name in order:
                site = sites[name]
                mark = len(site.samples.get("join", []))
                for _ in range(per_batch):
                    try:
                        await join_leave_cycle(site, rng.randrange(full_rooms), next(tokens), p)
                    except Exception as exc:  # reported, not fatal
                        site.errors.append(f"{type(exc).__name__}: {exc}"[:160])
                    await asyncio.sleep(p.think_s)
                batch_join = site.samples.get("join", [])[mark:]
                if batch_join:
                    site.batch_p99_ms.append(ms(percentile(batch_join, 99)))
        servers = {name: process_figures(site.pid) for name, site in sites.items()}
        for name, site in sites.items():  # closed by the server while the client held them
            servers[name]["background_closed"] = sum(c.closed.done() for c in site.background)
            servers[name]["background_held"] = len(site.background)
    finally:
        for task in beats:
            task.cancel()
        await asyncio.gather(*beats, return_exceptions=True)
        for site in sites.values():
            await close_all(site.background + site.observers, 30)
    return {"fill_s": fill_s, "servers": servers}


def latency_summary(site: Site) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, values in sorted(site.samples.items()):
        out[name] = {
            "n": len(values),
            "p50_ms": ms(percentile(values, 50)),
            "p99_ms": ms(percentile(values, 99)),
            "max_ms": ms(max(values)),
        }
    out["batch_join_p99_ms"] = site.batch_p99_ms
    out["errors"] = site.errors[:10]
    out["error_count"] = len(site.errors)
    return out


def run_latency(p: Params) -> dict[str, Any]:
    tag = unique_tag("presence")
    rooms = math.ceil(p.clients / p.per_room)
    envs = {"redis": redis_env(tag), "memory": dict(EMBEDDED_ENV)}
    logs: dict[str, dict[str, Any]] = {name: {} for name in SETUPS}
    try:
        with contextlib.ExitStack() as stack:
            sites = {}
            for name in SETUPS:
                server = stack.enter_context(
                    daphne_site(envs[name], rooms, p.room_capacity, report=logs[name])
                )
                sites[name] = Site(name, server.port, server.pid, Lobby(p.lobby_observers))
            extra = asyncio.run(latency_part(sites, p))
    finally:
        deleted = delete_keys(tag)
    return {
        "summary": {name: latency_summary(site) for name, site in sites.items()},
        "rooms": rooms,
        "redis_keys_deleted_after": deleted,
        "server_log_errors": {name: log["log_errors"] for name, log in logs.items()},
        **extra,
    }


# --- part 2: presence operations/s vs raw ZADD --------------------------------------------------


async def drive(count: int, concurrency: int, op: Callable[[int], Awaitable[Any]]) -> float:
    """Run ``op(0..count-1)`` with ``concurrency`` in flight; elapsed seconds."""
    todo = iter(range(count))

    async def worker() -> None:
        for i in todo:
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def presence_ops(backend: Any, count: int, p: Params, round_no: int) -> dict[str, Any]:
    from presence.backends.base import PeerInfo

    """Track, refresh, untrack ``count`` presences (rooms of ``room_capacity``)."""

    def room(i: int) -> str:
        return f"r{round_no}-{i // p.room_capacity}"

    def conn(i: int) -> str:
        return f"c{round_no}-{i}"

    ok = {"refreshed": 0, "untracked": 0}

    async def track(i: int) -> None:
        peer = PeerInfo(
            user_id=f"{i:016x}",
            name=f"bench-{i}",
            process="bench",
            media={"audio": True, "video": True},
            channel=f"specific.bench!{i}",
        )
        await backend.track(room(i), conn(i), peer, capacity=p.room_capacity)

    async def refresh(i: int) -> None:
        refreshed = await backend.refresh(room(i), conn(i))  # not inside +=: the await
        ok["refreshed"] += bool(refreshed)  # would split the read and the write

    async def untrack(i: int) -> None:
        gone = await backend.untrack(room(i), conn(i))
        ok["untracked"] += gone is not None

    cpu0 = time.process_time()
    seconds = {
        "track": await drive(count, p.ops_concurrency, track),
        "refresh": await drive(count, p.ops_concurrency, refresh),
        "untrack": await drive(count, p.ops_concurrency, untrack),
    }
    total = sum(seconds.values())
    return {
        **{f"{k}_per_s": round(count / s, 1) for k, s in seconds.items()},
        "all_per_s": round(3 * count / total, 1),
        "client_cpu_share": round((time.process_time() - cpu0) / total, 3),
        **ok,
    }


async def zadd_ops(client: Any, key: str, count: int, p: Params, depth: int) -> dict[str, Any]:
    """``count`` ZADDs to one key, ``ops_concurrency`` in flight, ``depth`` per round trip."""
    starts = iter(range(0, count, depth))

    async def worker() -> None:
        for start in starts:
            if depth == 1:
                await client.zadd(key, {f"m{start}": start})
                continue
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + depth, count)):
                pipe.zadd(key, {f"m{i}": i})
            await pipe.execute()

    cpu0 = time.process_time()
    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(p.ops_concurrency)))
    elapsed = time.perf_counter() - begin
    await client.delete(key)
    return {
        "all_per_s": round(count / elapsed, 1),
        "client_cpu_share": round((time.process_time() - cpu0) / elapsed, 3),
    }


def redis_benchmark(url: str, key: str, count: int, p: Params, depth: int) -> float | None:
    """``redis-benchmark`` ZADD to our own key (requests/s), or None without the binary."""
    binary = shutil.which("redis-benchmark")
    if not binary:
        return None
    host, port = redis_host_port(url)
    cmd = [binary, "-h", host, "-p", str(port), "-c", str(p.ops_concurrency), "-n", str(count)]
    cmd += ["-P", str(depth), "-r", "1000000", "--csv", "ZADD", key, "__rand_int__"]
    cmd += ["m:__rand_int__"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    rows = [r for r in csv.reader(io.StringIO(done.stdout)) if r and r[0] != "test"]
    return float(rows[-1][1])


async def ops_part(p: Params, tag: str) -> dict[str, list[dict[str, Any]]]:
    import redis.asyncio as aioredis

    from presence.backends.memory import MemoryPresenceBackend
    from presence.backends.redis import RedisPresenceBackend

    url = redis_url()
    backend = RedisPresenceBackend(url, prefix=f"{tag}-presence", ttl=60)
    raw = aioredis.Redis.from_url(url)
    key = f"{tag}-zadd"
    total = 3 * p.ops_count  # track + refresh + untrack
    samples: dict[str, list[dict[str, Any]]] = {}
    try:
        for round_no in range(p.ops_rounds):
            samples.setdefault("presence_redis", []).append(
                await presence_ops(backend, p.ops_count, p, round_no)
            )
            samples.setdefault("zadd_pipelined", []).append(
                await zadd_ops(raw, key, total, p, p.pipeline_depth)
            )
            samples.setdefault("zadd_single", []).append(await zadd_ops(raw, key, total, p, 1))
            for depth, name in ((p.pipeline_depth, "redis_benchmark_P16"), (1, "rb_P1")):
                rps = await asyncio.to_thread(redis_benchmark, url, f"{key}-rb", total, p, depth)
                await raw.delete(f"{key}-rb")
                if rps is not None:
                    samples.setdefault(name, []).append({"all_per_s": rps})
            samples.setdefault("presence_memory", []).append(
                await presence_ops(MemoryPresenceBackend(ttl=60), p.ops_count, p, round_no)
            )
    finally:
        await backend.close()
        await raw.aclose()
    return samples


def median_field(samples: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(s[key] for s in samples), 1)


# --- the benchmark ------------------------------------------------------------------------------


@exit_cleanly_on_sigterm()
def run(quick: bool) -> dict[str, Any]:
    p = QUICK if quick else FULL
    soft, hard = raise_nofile()
    load_start = os.getloadavg()
    latency = run_latency(p)
    tag = unique_tag("ops")
    try:
        ops = asyncio.run(ops_part(p, tag))
    finally:
        ops_keys_left = delete_keys(tag)

    rows: list[dict[str, Any]] = []
    summary = latency["summary"]
    for setup in SETUPS:
        s = summary[setup]
        for metric, key in (
            ("join -> lobby delta", "join"),
            ("join -> welcome", "welcome"),
            ("leave -> lobby delta", "leave"),
            ("join -> lobby delta during fill", "fill_join"),
        ):
            if key not in s:
                continue
            for pct in ("p50", "p99"):
                row = {"metric": f"{metric} {pct}", "value": s[key][f"{pct}_ms"], "unit": "ms"}
                row["target"] = setup
                if key == "join" and pct == "p99":
                    row["goal"] = f"<= {TARGET_P99_MS:g} ms"
                    row["met"] = s[key]["p99_ms"] <= TARGET_P99_MS
                rows.append(row)
        server = latency["servers"][setup]
        rows.append(
            {
                "metric": "background sockets closed by the server",
                "value": server["background_closed"],
                "unit": "sockets",
                "target": setup,
                "of": server["background_held"],
            }
        )
    for name, label in (
        ("presence_redis", "presence ops/s (track+refresh+untrack)"),
        ("zadd_pipelined", f"ZADD pipelined (depth {p.pipeline_depth}) ops/s"),
        ("zadd_single", "ZADD unpipelined ops/s"),
        ("redis_benchmark_P16", f"redis-benchmark ZADD -P {p.pipeline_depth}"),
        ("rb_P1", "redis-benchmark ZADD -P 1"),
        ("presence_memory", "memory backend ops/s (in-process)"),
    ):
        if name in ops:
            rows.append(
                {
                    "metric": label,
                    "value": median_field(ops[name], "all_per_s"),
                    "unit": "ops/s",
                    "target": name,
                    "rounds": [r["all_per_s"] for r in ops[name]],
                }
            )
    for phase in ("track", "refresh", "untrack"):
        rows.append(
            {
                "metric": f"presence {phase}/s",
                "value": median_field(ops["presence_redis"], f"{phase}_per_s"),
                "unit": "ops/s",
                "target": "presence_redis",
            }
        )
    presence_rate = median_field(ops["presence_redis"], "all_per_s")
    peers = {
        "presence_vs_zadd_pipelined": "zadd_pipelined",
        "presence_vs_zadd_single": "zadd_single",
        "presence_vs_redis_benchmark_P16": "redis_benchmark_P16",
    }
    ratios = {
        name: presence_rate / median_field(ops[peer], "all_per_s")
        for name, peer in peers.items()
        if peer in ops
    }
    ratios = {k: round(v, 4) for k, v in ratios.items()}
    for name, value in ratios.items():
        rows.append({"metric": name.replace("_", " "), "value": value, "unit": "x"})
    redis_p99 = summary["redis"]["join"]["p99_ms"]
    memory_p99 = summary["memory"]["join"]["p99_ms"]
    headline = (
        f"join -> lobby delta with {p.clients} clients: Redis p50 "
        f"{summary['redis']['join']['p50_ms']:.1f} ms / p99 {redis_p99:.1f} ms "
        f"({'meets' if redis_p99 <= TARGET_P99_MS else 'misses'} the {TARGET_P99_MS:g} ms "
        f"target), memory p50 {summary['memory']['join']['p50_ms']:.1f} / p99 "
        f"{memory_p99:.1f} ms; Redis presence {presence_rate:,.0f} ops/s = "
        f"{ratios['presence_vs_zadd_pipelined']:.3f}x pipelined ZADD, "
        f"{ratios['presence_vs_zadd_single']:.2f}x unpipelined ZADD"
    )
    return {
        "name": NAME,
        "rows": rows,
        "ratio": ratios["presence_vs_zadd_pipelined"],
        "headline": headline,
        "parameters": {
            **asdict(p),
            "target_p99_ms": TARGET_P99_MS,
            "servers": "two Daphne processes at once: REDIS_URL (Redis presence + "
            "channels-redis core layer) and embedded (memory presence + in-memory layer)",
            "server_env": "DEBUG=1, LOG_LEVEL=WARNING, access log off, temp SQLite",
            "client": "bench.clients.WsClient (asyncio Protocol), one process",
            "bench_nofile": [soft, hard],
            "latency_definition": "t0 just before TCP connect of the joining socket -> each "
            "lobby observer receives the matching presence delta; pooled over observers",
            "ops_definition": "ops_count presences tracked, refreshed, untracked "
            "(3 * ops_count ops); raw ZADDs of the same total to one key",
            "python": sys.version.split()[0],
        },
        "latency": latency,
        "ops_samples": ops,
        "checks": {"ops_keys_deleted_after": ops_keys_left},
        "loadavg": {"start": load_start, "end": os.getloadavg()},
    }
