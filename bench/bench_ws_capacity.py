"""Connection capacity of one Daphne process vs a raw ``websockets`` server, same run.

Ours: authenticated, presence-tracked room sockets (``/ws/rooms/<slug>/`` in mesh rooms of
capacity 4; a socket counts once its ``welcome`` arrived, i.e. token checked, room read,
presence tracked, room and lobby told) held by one Daphne process; in the embedded setup
(memory presence, in-memory channel layer) and with Redis (Redis presence, channels-redis).
Also lobby sockets (``/ws/lobby/``, counted at ``lobby-state``). Peers: a bare
``websockets.serve`` process that greets each socket with one message and echoes, and a bare
Channels consumer doing the same on the same Daphne setup (``bench/bare_channels_asgi.py``:
same settings and channel layer, no middleware, token or presence), so the report splits the
gap to raw into Daphne + Channels' own cost and ours.

For each server: warm up, read its RSS, fill it with N sockets from two client processes
(lean asyncio clients, 32 connects in flight in total), read RSS again. Figures: sockets
held, (RSS after - RSS before) / sockets, connects/s over the fill, then one heartbeat
round (a ``ping`` on every socket at once: ours refreshes presence and answers ``pong``,
the peer echoes) and the closing of everything.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.clients import WsClient, close_all, ws_connect
from bench.runner import result
from bench.support import (
    EMBEDDED_ENV,
    HOST,
    cpu_seconds,
    daphne_site,
    delete_keys,
    exit_cleanly_on_sigterm,
    make_tokens,
    ms,
    peer_process,
    percentile,
    process_figures,
    raise_nofile,
    redis_env,
    room_slug,
    unique_tag,
)

NAME = "ws_capacity"
BARE_APP = "bench.bare_channels_asgi:application"

#: Presence TTL for the servers here: the fill takes minutes and these clients send no
#: heartbeats while filling, so the default 30 s would expire (and re-announce) them midway.
#: The heartbeat load is measured separately (``heartbeat_round``).
PRESENCE_TTL_S = 3600
DEFAULT_HEARTBEAT_S = 10  # the default PRESENCE_TTL (30 s) // 3
PING_REPLY_LIMIT_S = 10.0  # paced round: a ping unanswered this long counts as lost

#: The issue's targets, and what was measured before any code (issue 3).
TARGETS = {"sockets": 20_000, "kb_per_socket": 40.0, "connect_rate_vs_raw": 0.7}
REFERENCE = {
    "bare_channels": {"sockets": 5000, "kb_per_socket": 33, "connects_per_s": 380},
    "raw_websockets": {"kb_per_socket": 48, "connects_per_s": 1160},
}


@dataclass(frozen=True)
class Params:
    sockets: int = 20_000
    workers: int = 2  # client processes (each holds sockets / workers)
    concurrency: int = 32  # connects in flight, all workers together (Twisted's backlog is 50)
    warmup: int = 40
    phase_timeout_s: float = 240.0  # stop starting connects after this; report how far it got
    connect_timeout_s: float = 20.0
    settle_s: float = 2.0
    ping_timeout_s: float = 60.0
    ping_in_flight: int = 64  # paced heartbeat round: pings awaiting their reply at once
    close_timeout_s: float = 60.0
    room_capacity: int = 4  # mesh maximum
    fd_reserve: int = 32  # fds left free in the server beyond those open after warm-up


FULL = Params()
QUICK = Params(sockets=1000, phase_timeout_s=60.0, warmup=20)

READY = {
    "raw": frozenset({"hello"}),
    "bare": frozenset({"hello"}),
    "room": frozenset({"welcome"}),
    "lobby": frozenset({"lobby-state"}),
}


# --- client worker processes ------------------------------------------------------------------


def _worker_main(conn: Connection) -> None:
    raise_nofile()
    asyncio.run(_worker_loop(conn))


async def _worker_loop(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    held: list[WsClient] = []
    while True:
        cmd, args = await loop.run_in_executor(None, conn.recv)
        try:
            if cmd == "fill":
                result = await _fill(held, **args)
            elif cmd == "ping":
                result = await _ping_round(held, **args)
            elif cmd == "close":
                result = await close_all(held, args["limit_s"])
                held.clear()
            elif cmd == "exit":
                conn.send({})
                return
            else:
                raise ValueError(cmd)
        except Exception:
            result = {"error": traceback.format_exc()}
        conn.send(result)


async def _fill(
    held: list[WsClient],
    port: int,
    paths: list[str],
    ready: frozenset[str],
    concurrency: int,
    start_at: float,
    deadline: float,
    limit_s: float,
) -> dict[str, Any]:
    """Connect ``paths`` with ``concurrency`` in flight from ``start_at`` (monotonic)."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    cpu0 = time.process_time()
    todo = iter(paths)
    done_at: list[float] = []
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def runner() -> None:
        for path in todo:
            if time.monotonic() > deadline:
                return
            t0 = time.monotonic()
            try:
                client = await ws_connect(port, path, ready, limit_s=limit_s)
            except Exception as exc:  # counted, never fatal: the figure is how many held
                errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                continue
            now = time.monotonic()
            held.append(client)
            latencies.append(now - t0)
            done_at.append(now - start_at)

    await asyncio.gather(*(runner() for _ in range(concurrency)))
    return {
        "connected": len(done_at),
        "failed": sum(errors.values()),
        "errors": dict(errors.most_common(5)),
        "stopped_by_deadline": time.monotonic() > deadline,
        "done_at": done_at,
        "latency_p50_ms": ms(percentile(latencies, 50)),
        "latency_p99_ms": ms(percentile(latencies, 99)),
        "client_cpu_s": round(time.process_time() - cpu0, 3),
    }


def _is_reply(message: dict) -> bool:
    return message.get("type") in ("pong", "ping")  # ours answers pong, the peer echoes


async def _ping_round(
    held: list[WsClient], start_at: float, limit_s: float, in_flight: int | None
) -> dict[str, Any]:
    """A ``ping`` on every held socket; time until every reply arrived.

    ``in_flight=None``: all at once (a burst). Otherwise that many sockets at a time, each
    sending its next ping only after its reply (paced: the server's sustained rate).
    """
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    live = [c for c in held if not c.closed.done()]
    answered = 0
    if in_flight is None:
        futures = [c.expect(_is_reply) for c in live]
        for client in live:
            client.send_json({"type": "ping", "t": 1})
        done, pending = await asyncio.wait(futures, timeout=limit_s) if futures else (set(), set())
        for future in pending:
            future.cancel()
        answered = sum(1 for f in done if not f.exception())
    else:
        todo = iter(live)
        deadline = time.monotonic() + limit_s

        async def runner() -> None:
            nonlocal answered
            for client in todo:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                future = client.expect(_is_reply)
                client.send_json({"type": "ping", "t": 1})
                try:  # a lost reply must not stall this runner until the deadline
                    await asyncio.wait_for(future, min(remaining, PING_REPLY_LIMIT_S))
                except Exception:  # timed out, or the socket closed
                    continue
                answered += 1

        await asyncio.gather(*(runner() for _ in range(in_flight)))
    return {"sent": len(live), "answered": answered, "s": time.monotonic() - start_at}


class Workers:
    """The client processes (forked children, stopped through their pipes or by PID)."""

    def __init__(self, count: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for _ in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def call(self, cmd: str, per_worker: list[dict[str, Any]], wait_s: float) -> list[dict]:
        for pipe, args in zip(self.pipes, per_worker, strict=True):
            pipe.send((cmd, args))
        results = []
        for pipe in self.pipes:
            if not pipe.poll(wait_s):
                raise RuntimeError(f"client worker did not answer {cmd!r} within {wait_s:.0f}s")
            result = pipe.recv()
            if "error" in result:
                raise RuntimeError(f"client worker failed on {cmd!r}:\n{result['error']}")
            results.append(result)
        return results

    def stop(self) -> None:
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            with suppress(OSError):
                pipe.send(("exit", {}))
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


# --- servers ----------------------------------------------------------------------------------


def raw_server_main(port: int) -> None:
    """The peer: a bare ``websockets`` server that greets each socket once, then echoes.
    Prints ``ready`` when listening."""
    import websockets

    hello = json.dumps({"type": "hello"})

    async def handler(ws: Any) -> None:
        try:
            await ws.send(hello)
            async for message in ws:
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass

    async def main() -> None:
        async with websockets.serve(handler, HOST, port):
            print("ready", flush=True)
            await asyncio.Future()

    asyncio.run(main())


@contextmanager
def raw_server() -> Iterator[tuple[int, int]]:
    """The peer in its own process; yields (port, pid)."""
    with peer_process("bench.bench_ws_capacity:raw_server_main") as peer:
        yield peer.port, peer.pid


@contextmanager
def site_server(
    setup: str,
    rooms: int,
    capacity: int,
    report: dict[str, Any],
    app: str = "rtcsite.asgi:application",
) -> Iterator[tuple[int, int]]:
    """Daphne in the embedded or Redis setup; yields (port, pid); Redis keys removed after.
    ``report`` receives the exception names counted in the server's log; ``app`` may be the
    bare Channels peer instead of the site."""
    tag = unique_tag("cap")
    env = redis_env(tag) if setup == "redis" else dict(EMBEDDED_ENV)
    env["PRESENCE_TTL"] = str(PRESENCE_TTL_S)
    try:
        with daphne_site(env, rooms=rooms, capacity=capacity, report=report, app=app) as server:
            yield server.port, server.pid
    finally:
        if setup == "redis":
            report["redis_keys_deleted_after"] = delete_keys(tag)


# --- one phase --------------------------------------------------------------------------------


def room_paths(tokens: list[str], first_room: int, capacity: int) -> list[str]:
    return [
        f"/ws/rooms/{room_slug(first_room + i // capacity)}/?token={token}"
        for i, token in enumerate(tokens)
    ]


def fill_rates(done_at: list[float], connected: int) -> dict[str, Any]:
    """Overall connects/s and per quarter of the fill (does it slow as sockets pile up?)."""
    if not done_at:
        return {"connects_per_s": 0.0, "fill_s": None, "quarters_per_s": []}
    ordered = sorted(done_at)
    fill_s = ordered[-1]
    quarters = []
    edges = [0] + [round(len(ordered) * q / 4) for q in (1, 2, 3, 4)]
    for lo, hi in itertools.pairwise(edges):
        if hi - lo < 2:
            continue
        start = ordered[lo - 1] if lo else 0.0
        span = ordered[hi - 1] - start
        quarters.append(round((hi - lo) / span, 1) if span > 0 else None)
    return {
        "connects_per_s": round(connected / fill_s, 1) if fill_s > 0 else None,
        "fill_s": round(fill_s, 3),
        "quarters_per_s": quarters,
    }


def run_phase(
    workers: Workers,
    label: str,
    port: int,
    pid: int,
    paths: list[str],
    warm_paths: list[str],
    ready: frozenset[str],
    p: Params,
) -> dict[str, Any]:
    """Warm up, measure RSS, fill, measure again, one heartbeat round, close all."""
    n_workers = len(workers.pipes)
    idle = [{} for _ in range(n_workers - 1)]
    slack = p.connect_timeout_s + 30
    # warm-up from the first worker only (imports, caches, thread pool): then closed
    warm = {
        "port": port,
        "paths": warm_paths,
        "ready": ready,
        "concurrency": 8,
        "start_at": 0.0,
        "deadline": time.monotonic() + 60,
        "limit_s": p.connect_timeout_s,
    }
    empty = {**warm, "paths": []}
    workers.call("fill", [warm, *[empty for _ in idle]], 60 + slack)
    workers.call("close", [{"limit_s": 30}] * n_workers, 60)
    time.sleep(1.0)
    before = process_figures(pid)
    headroom = before["nofile_soft"] - before["open_fds"] - p.fd_reserve
    planned = min(len(paths), headroom)
    chosen = paths[:planned]
    start_at = time.monotonic() + 0.5
    per = [
        {
            "port": port,
            "paths": chosen[w::n_workers],
            "ready": ready,
            "concurrency": max(1, p.concurrency // n_workers),
            "start_at": start_at,
            "deadline": start_at + p.phase_timeout_s,
            "limit_s": p.connect_timeout_s,
        }
        for w in range(n_workers)
    ]
    cpu0 = cpu_seconds(pid)
    fills = workers.call("fill", per, p.phase_timeout_s + slack)
    server_fill_cpu = cpu_seconds(pid) - cpu0
    time.sleep(p.settle_s)
    after = process_figures(pid)
    connected = sum(f["connected"] for f in fills)
    done_at = [t for f in fills for t in f["done_at"]]
    rates = fill_rates(done_at, connected)
    rss_delta = after["rss_kb"] - before["rss_kb"]

    rounds = {}
    for kind, in_flight in (("paced", max(1, p.ping_in_flight // n_workers)), ("burst", None)):
        ping_at = time.monotonic() + 0.3
        cpu0 = cpu_seconds(pid)
        args = {"start_at": ping_at, "limit_s": p.ping_timeout_s, "in_flight": in_flight}
        pings = workers.call("ping", [args] * n_workers, p.ping_timeout_s + 30)
        answered = sum(r["answered"] for r in pings)
        sent = sum(r["sent"] for r in pings)
        ping_s = max(r["s"] for r in pings)
        rounds[kind] = {
            "in_flight": p.ping_in_flight if in_flight else "all",
            "sent": sent,
            "answered": answered,
            "lost": sent - answered,
            "s": round(ping_s, 3),
            "messages_per_s": round(answered / ping_s, 1) if ping_s > 0 else None,
            "server_cpu_s": round(cpu_seconds(pid) - cpu0, 3),
        }
    closes = workers.call(
        "close", [{"limit_s": p.close_timeout_s}] * n_workers, p.close_timeout_s + 30
    )
    errors: Counter[str] = Counter()
    for f in fills:
        errors.update(f["errors"])
    return {
        "label": label,
        "requested": len(paths),
        "planned": planned,
        "limited_by_fds": planned < len(paths),
        "connected": connected,
        "failed": sum(f["failed"] for f in fills),
        "errors": dict(errors.most_common(5)),
        "stopped_by_deadline": any(f["stopped_by_deadline"] for f in fills),
        **rates,
        "connect_latency_p50_ms": statistics.median(f["latency_p50_ms"] for f in fills),
        "connect_latency_p99_ms": max(f["latency_p99_ms"] for f in fills),
        "kb_per_socket": round(rss_delta / connected, 2) if connected else None,
        "server_before": before,
        "server_after": after,
        "server_fill_cpu_s": round(server_fill_cpu, 3),
        "server_cpu_share_during_fill": (
            round(server_fill_cpu / rates["fill_s"], 3) if rates["fill_s"] else None
        ),
        "client_cpu_s": [f["client_cpu_s"] for f in fills],
        "heartbeat_round": rounds["paced"],
        "heartbeat_burst": rounds["burst"],
        # default PRESENCE_TTL 30 s -> a heartbeat every 10 s per socket
        "heartbeats_needed_per_s": round(connected / DEFAULT_HEARTBEAT_S, 1),
        "close": {
            "closed": sum(c["closed"] for c in closes),
            "aborted": sum(c["aborted"] for c in closes),
            "s": round(max(c["s"] for c in closes), 3),
        },
    }


# --- the benchmark ----------------------------------------------------------------------------


def _rows(phases: dict[str, dict[str, Any]], raw_rate: float, raw_kb: float) -> list[dict]:
    rows: list[dict[str, Any]] = []
    for label, ph in phases.items():
        rate = ph["connects_per_s"] or 0.0
        kb = ph["kb_per_socket"]
        rows += [
            {"metric": "sockets held", "value": ph["connected"], "unit": "sockets",
             "target": label, "planned": ph["planned"]},
            {"metric": "memory per socket", "value": kb, "unit": "KB", "target": label,
             "vs_raw": round(kb / raw_kb, 3) if kb and raw_kb else None},
            {"metric": "connects/s", "value": rate, "unit": "1/s", "target": label,
             "vs_raw": round(rate / raw_rate, 3) if raw_rate else None,
             "quarters": ph["quarters_per_s"]},
            {"metric": "heartbeat round (64 in flight)",
             "value": ph["heartbeat_round"]["messages_per_s"], "unit": "msg/s", "target": label,
             "needed": ph["heartbeats_needed_per_s"]},
            {"metric": "heartbeat burst answered", "value": ph["heartbeat_burst"]["answered"],
             "unit": "replies", "target": label, "sent": ph["heartbeat_burst"]["sent"]},
        ]  # fmt: skip
    return rows


@exit_cleanly_on_sigterm()
def run(quick: bool) -> dict[str, Any]:
    p = QUICK if quick else FULL
    soft, hard = raise_nofile()
    warm_rooms = math.ceil(p.warmup / p.room_capacity)
    fill_rooms = math.ceil(p.sockets / p.room_capacity)
    rooms = fill_rooms + warm_rooms
    order = ["raw", "bare", "rooms", "lobby", "rooms_redis", "raw_2"]
    phases: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    load_start = os.getloadavg()
    workers = Workers(p.workers)
    try:
        for label in order:
            server_report: dict[str, Any] = {}
            tokens = make_tokens(p.sockets + p.warmup)  # fresh: tokens expire after 15 min
            fill_tokens, warm_tokens = tokens[: p.sockets], tokens[p.sockets :]
            if label.startswith("raw"):
                paths, warm = ["/"] * p.sockets, ["/"] * p.warmup
                server = raw_server()
                ready = READY["raw"]
            elif label == "bare":
                paths, warm = ["/ws/bare/"] * p.sockets, ["/ws/bare/"] * p.warmup
                server = site_server("embedded", 0, p.room_capacity, server_report, BARE_APP)
                ready = READY["bare"]
            elif label == "lobby":
                paths = [f"/ws/lobby/?token={t}" for t in fill_tokens]
                warm = [f"/ws/lobby/?token={t}" for t in warm_tokens]
                server = site_server("embedded", 0, p.room_capacity, server_report)
                ready = READY["lobby"]
            else:
                paths = room_paths(fill_tokens, 0, p.room_capacity)
                warm = room_paths(warm_tokens, fill_rooms, p.room_capacity)
                setup = "redis" if label == "rooms_redis" else "embedded"
                server = site_server(setup, rooms, p.room_capacity, server_report)
                ready = READY["room"]
            with server as (port, pid):
                phases[label] = run_phase(workers, label, port, pid, paths, warm, ready, p)
            phases[label]["server_report"] = server_report
            phases[label]["loadavg_after"] = os.getloadavg()
            print(
                f"  [{label}] {phases[label]['connected']} sockets, "
                f"{phases[label]['kb_per_socket']} KB each, "
                f"{phases[label]['connects_per_s']} connects/s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        workers.stop()
    raw_rate = statistics.median(phases[k]["connects_per_s"] for k in ("raw", "raw_2"))
    raw_kb = statistics.median(phases[k]["kb_per_socket"] for k in ("raw", "raw_2"))
    raw_hb = statistics.median(
        phases[k]["heartbeat_round"]["messages_per_s"] for k in ("raw", "raw_2")
    )
    ours = phases["rooms"]
    ratio = round(ours["connects_per_s"] / raw_rate, 3)
    bare = phases["bare"]
    bare_rate = bare["connects_per_s"] or 0.0
    verdict = {
        label: {
            "sockets_20k": phases[label]["connected"] >= TARGETS["sockets"],
            "kb_le_40": (phases[label]["kb_per_socket"] or 1e9) <= TARGETS["kb_per_socket"],
            "connect_rate_ge_0.7_raw": (phases[label]["connects_per_s"] or 0) / raw_rate
            >= TARGETS["connect_rate_vs_raw"],
            "heartbeats_sustainable": (phases[label]["heartbeat_round"]["messages_per_s"] or 0)
            >= phases[label]["heartbeats_needed_per_s"],
        }
        for label in ("rooms", "lobby", "rooms_redis")
    }
    rows = _rows(phases, raw_rate, raw_kb)
    rows += [
        {"metric": "raw connects/s (median of 2)", "value": raw_rate, "unit": "1/s",
         "target": "raw"},
        {"metric": "raw memory/socket (median of 2)", "value": raw_kb, "unit": "KB",
         "target": "raw"},
        {"metric": "rooms/raw connects/s", "value": ratio, "unit": "x", "target": "ratio",
         "goal": f">= {TARGETS['connect_rate_vs_raw']}"},
        {"metric": "rooms_redis/raw connects/s",
         "value": round(phases["rooms_redis"]["connects_per_s"] / raw_rate, 3), "unit": "x",
         "target": "ratio", "goal": f">= {TARGETS['connect_rate_vs_raw']}"},
        {"metric": "lobby/raw connects/s",
         "value": round(phases["lobby"]["connects_per_s"] / raw_rate, 3), "unit": "x",
         "target": "ratio", "goal": f">= {TARGETS['connect_rate_vs_raw']}"},
        {"metric": "rooms/raw heartbeat round", "unit": "x", "target": "ratio",
         "value": round(ours["heartbeat_round"]["messages_per_s"] / raw_hb, 3)},
        {"metric": "bare Channels/raw connects/s", "value": round(bare_rate / raw_rate, 3),
         "unit": "x", "target": "ratio",
         "note": "the ceiling for any Channels app on this Daphne setup"},
        {"metric": "rooms/bare Channels connects/s",
         "value": round(ours["connects_per_s"] / bare_rate, 3) if bare_rate else None,
         "unit": "x", "target": "ratio"},
        {"metric": "lobby/bare Channels connects/s",
         "value": round(phases["lobby"]["connects_per_s"] / bare_rate, 3) if bare_rate else None,
         "unit": "x", "target": "ratio"},
    ]  # fmt: skip
    fd_note = (
        f"server fd limit {ours['server_before']['nofile_soft']} "
        f"(hard {ours['server_before']['nofile_hard']})"
    )
    headline = (
        f"room sockets (embedded): {ours['connected']} held at {ours['kb_per_socket']} KB "
        f"each, {ours['connects_per_s']} connects/s = {ratio:.2f}x raw websockets "
        f"({raw_rate:.0f}/s, {raw_kb} KB), bare Channels on Daphne {bare_rate:.0f}/s = "
        f"{bare_rate / raw_rate:.2f}x raw at {bare['kb_per_socket']} KB (ours "
        f"{ours['connects_per_s'] / bare_rate if bare_rate else 0:.2f}x bare); "
        f"lobby {phases['lobby']['connects_per_s']}/s at {phases['lobby']['kb_per_socket']} KB; "
        f"with Redis "
        f"{phases['rooms_redis']['connected']} at {phases['rooms_redis']['kb_per_socket']} KB, "
        f"{phases['rooms_redis']['connects_per_s']}/s; targets 20,000 / <=40 KB / >=0.7x: "
        f"{verdict['rooms']}; {fd_note}"
    )
    parameters = {
        **asdict(p),
        "order": order,
        "rooms": rooms,
        "bench_nofile": [soft, hard],
        "client": "bench.clients.WsClient (asyncio Protocol) in forked worker processes",
        "ours": "daphne rtcsite.asgi:application, DEBUG=1, LOG_LEVEL=WARNING, access log off",
        "embedded_env": {"REDIS_URL": "", "DATABASE_URL": "", "SQLITE_PATH": "<temp>"},
        "redis_env": "REDIS_URL, CHANNEL_LAYER_PREFIX/PRESENCE_KEY_PREFIX=<unique tag>",
        "peer": "websockets.serve (greets once, echoes), one process",
        "bare_peer": f"{BARE_APP} on the same Daphne command line and embedded settings",
    }
    detail = {
        "targets": TARGETS,
        "reference_issue_3": REFERENCE,
        "verdict": verdict,
        "phases": phases,
        "total_phase_s": round(time.monotonic() - started, 1),
        "loadavg": {"start": load_start, "end": os.getloadavg()},
        "os": {
            "ip_local_port_range": Path("/proc/sys/net/ipv4/ip_local_port_range")
            .read_text()
            .split(),
            "somaxconn": int(Path("/proc/sys/net/core/somaxconn").read_text()),
            "pid": os.getpid(),
        },
    }
    return result(NAME, rows, ratio, headline, parameters, detail)
