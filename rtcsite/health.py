"""Health for the people who run the site: readiness checks, and each process's status record.

* ``/healthz`` and ``/readyz`` are answered by ``rtcsite.observe`` before Django (no session,
  CSRF, host check or HTTPS redirect: a load balancer probes plain HTTP by address);
  ``readiness`` here checks the database and Redis, each with ``HEALTH_CHECK_TIMEOUT``.
* Every process runs one ``Sampler`` task (started on its first request or socket): every
  ``HEALTH_PUBLISH_INTERVAL`` seconds it sets the sampled gauges of ``rtcsite.metrics``
  and publishes a small status record (rooms, sockets, server peers, streams with their
  FFmpeg pid, CPU, queue depth, segment lag, recent errors) to Redis with a TTL of three
  intervals, so a dead process's record disappears by itself. Without Redis the one
  process keeps its record in memory.
* The admin's health page (``admin_page``, staff only) shows every live record and polls
  ``admin_data`` for fresh ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from redis.exceptions import RedisError

from rtcsite import logctx, metrics
from rtcsite.process import PROCESS_ID

logger = logging.getLogger(__name__)

STARTED_AT = time.time()
PAGE_SIZE = resource.getpagesize()
#: sockets of this process by kind, and by (kind, slug) for the rooms count (rtcsite.observe)
SOCKETS: dict[str, int] = {}
ROOM_SOCKETS: dict[tuple[str, str], int] = {}
ROOM_KINDS = ("mesh", "media")


def socket_opened(kind: str, slug: str) -> None:
    SOCKETS[kind] = SOCKETS.get(kind, 0) + 1
    if kind in ROOM_KINDS:
        ROOM_SOCKETS[kind, slug] = ROOM_SOCKETS.get((kind, slug), 0) + 1


def socket_closed(kind: str, slug: str) -> None:
    SOCKETS[kind] -= 1
    if kind in ROOM_KINDS:
        left = ROOM_SOCKETS[kind, slug] - 1
        if left:
            ROOM_SOCKETS[kind, slug] = left
        else:
            del ROOM_SOCKETS[kind, slug]


# --- readiness -----------------------------------------------------------------------------
_db_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtcsite-health")
_db_check: Future | None = None
_redis_clients: dict[int, Any] = {}


def _ping_database() -> bool:
    """In the health thread; never raises (a waiter that timed out would not read it)."""
    from django.db import connection

    try:
        connection.close_if_unusable_or_obsolete()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        logger.debug("database check failed: %s", exc)
        return False
    return True


async def _database_ok(seconds: float) -> bool:
    """One ``SELECT 1`` in the health thread (its own connection, kept). Probes that come
    while one runs wait for that one: they do not pile up behind a hung database."""
    global _db_check
    if _db_check is None or _db_check.done():
        _db_check = _db_pool.submit(_ping_database)
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(_db_check)), seconds)
    except TimeoutError:
        return False


def _redis_client(timeout: float):
    """One client per event loop (tests run several), short timeouts on every call."""
    import redis.asyncio

    loop = asyncio.get_running_loop()
    client = _redis_clients.get(id(loop))
    if client is None:
        client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout
        )
        _redis_clients.clear()  # an old loop's client is unusable here
        _redis_clients[id(loop)] = client
    return client


async def _redis_ok(seconds: float) -> bool:
    try:
        return bool(await asyncio.wait_for(_redis_client(seconds).ping(), seconds))
    except Exception:
        return False


async def readiness() -> dict[str, bool]:
    """``{"database": ok, "redis": ok}`` (Redis only when REDIS_URL is set), concurrently."""
    timeout = settings.HEALTH_CHECK_TIMEOUT
    checks = {"database": _database_ok(timeout)}
    if settings.REDIS_URL:
        checks["redis"] = _redis_ok(timeout)
    results = await asyncio.gather(*checks.values())
    return dict(zip(checks, results, strict=True))


# --- the sampler ---------------------------------------------------------------------------
class Sampler:
    """Sets the sampled gauges and publishes this process's status record, periodically."""

    def __init__(self) -> None:
        self.cpu_at = (time.monotonic(), _cpu_seconds())
        self.frames: dict[int, tuple[int, int]] = {}  # id(server peer) -> frames in, out
        self.frames_at = time.monotonic()
        self.role = settings.PROCESS_ROLE
        self.labels = {"pid": str(os.getpid()), "role": self.role or "-"}

    async def run(self, interval: float) -> None:
        publishing = True  # a Redis outage is logged once when it starts and once when it ends
        while True:
            try:
                record = await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("health sample failed")
            else:
                try:
                    await publish(record, ttl=interval * 3)
                except (OSError, TimeoutError, RedisError) as exc:
                    if publishing:
                        logger.warning("status record not published (%s): retrying", exc)
                    publishing = False
                else:
                    if not publishing:
                        logger.info("status record published again")
                    publishing = True
            await asyncio.sleep(interval)

    async def sample(self) -> dict[str, Any]:
        now_mono, now = time.monotonic(), time.time()
        cpu_then, cpu_seconds_then = self.cpu_at
        cpu_seconds = _cpu_seconds()
        cpu = max(0.0, cpu_seconds - cpu_seconds_then) / max(now_mono - cpu_then, 1e-6)
        self.cpu_at = (now_mono, cpu_seconds)
        rss = _resident_bytes()
        metrics.PROCESS_CPU.labels(**self.labels).set(cpu)
        metrics.PROCESS_RSS.labels(**self.labels).set(rss)
        peers, fps_in, fps_out = self._server_peers(now_mono)
        streams = self._streams(now)
        ready = await readiness()
        return {
            "id": PROCESS_ID,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "role": self.role,
            "started_at": STARTED_AT,
            "updated_at": now,
            "uptime": round(now - STARTED_AT, 1),
            "sockets": dict(SOCKETS),
            "rooms": len({slug for (kind, slug), n in ROOM_SOCKETS.items() if n}),
            "server_peers": peers,
            "fps_in": round(fps_in, 1),
            "fps_out": round(fps_out, 1),
            "streams": streams,
            "queue_bytes": sum(s["queue_bytes"] for s in streams),
            "segment_lag": max((s["segment_lag"] or 0 for s in streams), default=0),
            "cpu": round(cpu, 3),
            "rss": rss,
            "checks": {name: "ok" if ok else "failing" for name, ok in ready.items()},
            "errors": list(logctx.RECENT_ERRORS)[-10:],
        }

    def _server_peers(self, now: float) -> tuple[int, float, float]:
        """Server peers of this process and their video fps (0 where aiortc is not loaded:
        a web process never imports it, and this must not make it)."""
        module = sys.modules.get("signaling.media.peer")
        peers = module.live_peers() if module is not None else set()
        frames, total_in, total_out = {}, 0, 0
        for peer in peers:
            source, slot = peer.sources.get("video"), peer.slots.get("video")
            counts = (source.frames_in if source else 0, slot.frames_out if slot else 0)
            last_in, last_out = self.frames.get(id(peer), (0, 0))
            total_in += max(0, counts[0] - last_in)
            total_out += max(0, counts[1] - last_out)
            frames[id(peer)] = counts
        elapsed = max(now - self.frames_at, 1e-6)
        self.frames, self.frames_at = frames, now
        metrics.SERVER_PEERS.set(len(peers))
        metrics.SERVER_PEER_FRAMES.labels("in").inc(total_in)
        metrics.SERVER_PEER_FRAMES.labels("out").inc(total_out)
        metrics.SERVER_PEER_FPS.labels("in").set(total_in / elapsed)
        metrics.SERVER_PEER_FPS.labels("out").set(total_out / elapsed)
        return len(peers), total_in / elapsed, total_out / elapsed

    def _streams(self, now: float) -> list[dict[str, Any]]:
        module = sys.modules.get("streaming.registry")
        lives = [module.get(e.slug) for e in module.entries()] if module is not None else []
        streams = []
        for live in lives:
            if live is None:
                continue
            pipeline = live.pipeline
            streams.append(
                {
                    "slug": live.slug,
                    "state": str(pipeline.state),
                    "ffmpeg_pid": pipeline.pid,
                    "queue_bytes": pipeline.queue_bytes,
                    "segment_lag": _segment_lag(live.slug, pipeline.output_dir),
                }
            )
        live_slugs = {s["slug"] for s in streams}
        for slug in list(metrics.last_chunk_at):
            if slug not in live_slugs:
                metrics.last_chunk_at.pop(slug, None)
        metrics.LIVE_STREAMS.set(len(streams))
        metrics.ENCODER_QUEUE_BYTES.set(sum(s["queue_bytes"] for s in streams))
        metrics.CHUNK_TO_SEGMENT.set(max((s["segment_lag"] or 0 for s in streams), default=0))
        return streams


def _segment_lag(slug: str, output_dir) -> float | None:
    """Seconds the newest chunk has waited with no newer segment: the first rendition's
    HLS playlist is rewritten with each segment (one stat, not a walk of the folder)."""
    chunk_at = metrics.last_chunk_at.get(slug)
    if chunk_at is None:
        return None
    try:
        written = (output_dir / "media_0.m3u8").stat().st_mtime
    except OSError:
        return round(time.time() - chunk_at, 2)  # nothing written yet: waiting since then
    return round(max(0.0, chunk_at - written), 2)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


_sampler_task: asyncio.Task | None = None


def ensure_sampler() -> None:
    """Start this process's sampler once, on the running loop (Daphne has no start-up
    hook): called by ``rtcsite.observe`` for every connection, so it costs a check."""
    global _sampler_task
    task = _sampler_task
    if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
        return
    _sampler_task = asyncio.get_running_loop().create_task(
        Sampler().run(settings.HEALTH_PUBLISH_INTERVAL),
        context=logctx.task_context(),
    )


# --- records -------------------------------------------------------------------------------
_local: dict[str, dict[str, Any]] = {}


def _keys() -> tuple[str, str]:
    prefix = f"{settings.CACHE_KEY_PREFIX}:health"
    return f"{prefix}:procs", f"{prefix}:proc:"


async def publish(record: dict[str, Any], ttl: float) -> None:
    """Store this process's record (Redis: a key with a TTL, and an index of process ids
    scored by expiry so readers find them without a key scan)."""
    if not settings.REDIS_URL:
        _local[record["id"]] = record
        return
    index, prefix = _keys()
    client = _redis_client(settings.HEALTH_CHECK_TIMEOUT)
    async with client.pipeline(transaction=False) as pipe:
        pipe.set(prefix + record["id"], json.dumps(record), ex=max(1, int(ttl)))
        pipe.zadd(index, {record["id"]: time.time() + ttl})
        await asyncio.wait_for(pipe.execute(), settings.HEALTH_CHECK_TIMEOUT)


async def records() -> list[dict[str, Any]]:
    """Every live process's latest record, by role then id."""
    if not settings.REDIS_URL:
        found = list(_local.values())
    else:
        index, prefix = _keys()
        client = _redis_client(settings.HEALTH_CHECK_TIMEOUT)
        await client.zremrangebyscore(index, "-inf", time.time())
        ids = [i.decode() for i in await client.zrange(index, 0, -1)]
        raw = await client.mget([prefix + i for i in ids]) if ids else []
        found = [json.loads(item) for item in raw if item]
    return sorted(found, key=lambda r: (r.get("role") or "", r["id"]))


# --- admin ---------------------------------------------------------------------------------
async def _admin_data() -> dict[str, Any]:
    ready = await readiness()
    try:
        processes, error = await records(), ""
    except Exception as exc:  # Redis down: say so, the page keeps polling
        processes, error = [], f"process records unavailable: {type(exc).__name__}"
    return {
        "now": time.time(),
        "served_by": PROCESS_ID,
        "checks": {name: "ok" if ok else "failing" for name, ok in ready.items()},
        "processes": processes,
        "error": error,
    }


def admin_data(request: HttpRequest) -> JsonResponse:
    """The health page's data (staff only: wrapped by ``admin_view`` in urls.py, which is
    sync: the checks run on the server's loop through ``async_to_sync``)."""
    response = JsonResponse(async_to_sync(_admin_data)())
    response["Cache-Control"] = "no-store"
    return response


def admin_page(request: HttpRequest) -> HttpResponse:
    context = {
        **admin.site.each_context(request),
        "title": "Process health",
        "interval": settings.HEALTH_PUBLISH_INTERVAL,
    }
    return TemplateResponse(request, "admin/health.html", context)
