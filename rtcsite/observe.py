"""The ASGI layer around the whole site: probes, metrics, socket counts and log context.

* ``GET /healthz``: 200 while the process serves (nothing else is touched). ``GET /readyz``:
  200 if the database and Redis answer within HEALTH_CHECK_TIMEOUT, else 503; the body names
  each check ``ok`` or ``failing``, nothing more. ``GET /metrics``: Prometheus text for a
  scraper that METRICS_ALLOW_FROM / METRICS_TOKEN admit, 404 for anyone else.
  All three are answered here, before Django: no session, CSRF, database connection,
  ALLOWED_HOSTS check or SECURE_SSL_REDIRECT (a load balancer probes plain HTTP by address;
  these answers carry nothing a redirect to HTTPS would protect).
* Every WebSocket is counted by kind (``rtcsite_sockets``), its close code recorded, and a
  fresh log context set (``rtcsite.logctx``: connection id, and the room or stream its path
  names) for every line its handlers log. HTTP requests are counted and timed.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from typing import Any

from rtcsite import health, logctx, metrics

#: (path pattern, socket kind, log field the slug names)
WS_KINDS = (
    (re.compile(r"^/ws/rooms/([^/]+)/"), "mesh", "room"),
    (re.compile(r"^/ws/media/([^/]+)/"), "media", "room"),
    (re.compile(r"^/ws/streams/([^/]+)/watch/"), "viewer", "stream"),
    (re.compile(r"^/ws/streams/([^/]+)/ingest/"), "ingest", "stream"),
    (re.compile(r"^/ws/lobby/"), "lobby", ""),
    (re.compile(r"^/ws/faces/"), "faces", ""),
)
HTTP_STREAM = re.compile(r"^/streams/([-a-zA-Z0-9_]+)/(?:ingest|stop|status|publish)/")
PROBES = ("/healthz", "/readyz", "/metrics")


def _conn_id() -> str:
    """A log line's connection id: only tells lines apart, so no system randomness (a
    ``secrets`` call per request was a syscall on every playlist and part)."""
    return f"{random.getrandbits(32):08x}"


def socket_kind(path: str) -> tuple[str, str, str]:
    """``(kind, log field, slug)`` of a socket path."""
    for pattern, kind, field in WS_KINDS:
        match = pattern.match(path)
        if match:
            return kind, field, match.group(1) if field else ""
    return "other", "", ""


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


async def _respond(send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _probe(scope: dict[str, Any], send) -> None:
    path = scope["path"]
    if scope["method"] not in ("GET", "HEAD"):
        await _respond(send, 405, b'{"status":"method not allowed"}', "application/json")
    elif path == "/healthz":
        await _respond(send, 200, b'{"status":"ok"}', "application/json")
    elif path == "/readyz":
        checks = await health.readiness()
        ok = all(checks.values())
        body = {
            "status": "ok" if ok else "failing",
            "checks": {name: "ok" if up else "failing" for name, up in checks.items()},
        }
        await _respond(send, 200 if ok else 503, json.dumps(body).encode(), "application/json")
    else:
        client = scope.get("client")
        allowed = metrics.scrape_allowed(
            str(client[0]) if client else "",
            _header(scope, b"x-forwarded-for"),
            _header(scope, b"authorization"),
        )
        if not allowed:
            await _respond(send, 404, b"Not Found", "text/plain")
            return
        body, content_type = await asyncio.to_thread(metrics.exposition)
        await _respond(send, 200, body, content_type)


class Observe:
    """Wraps the site's ASGI application (rtcsite/asgi.py); see the module docstring."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            health.ensure_sampler()
            await self._socket(scope, receive, send)
        elif kind == "http":
            health.ensure_sampler()
            if scope["path"] in PROBES:
                await _probe(scope, send)
            else:
                await self._http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope, receive, send) -> None:
        match = HTTP_STREAM.match(scope["path"])
        if match:
            logctx.start(conn=_conn_id(), stream=match.group(1))
        else:
            logctx.start(conn=_conn_id())
        started = time.perf_counter()
        status = 500

        async def observed_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            metrics.HTTP_REQUESTS.labels(scope["method"], f"{status // 100}xx").inc()
            metrics.HTTP_SECONDS.observe(time.perf_counter() - started)

    async def _socket(self, scope, receive, send) -> None:
        kind, field, slug = socket_kind(scope["path"])
        fields = {"conn": _conn_id()}
        if field:
            fields[field] = slug
        logctx.start(**fields)
        observed = ObservedSocket(kind, slug, receive, send)
        try:
            await self.app(scope, observed.receive, observed.send)
        except Exception:
            observed.closed(1011, "server")  # Daphne closes with 1011 for an application error
            raise
        finally:
            observed.done()


class ObservedSocket:
    """One socket's ``send``/``receive`` seen on their way: accept counts it, the first close
    (ours or the client's) records its code. Slotted: held for the socket's lifetime."""

    __slots__ = ("_receive", "_send", "accepted", "code", "kind", "slug")

    def __init__(self, kind: str, slug: str, receive, send) -> None:
        self.kind, self.slug = kind, slug
        self._receive, self._send = receive, send
        self.accepted = False
        self.code: str | None = None

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept" and not self.accepted:
            self.accepted = True
            metrics.SOCKETS.labels(self.kind).inc()
            metrics.SOCKET_OPENS.labels(self.kind).inc()
            health.socket_opened(self.kind, self.slug)
        elif kind == "websocket.close":
            self.closed(message.get("code"), "server")
        await self._send(message)

    async def receive(self) -> dict[str, Any]:
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self.closed(message.get("code"), "client")
        return message

    def closed(self, code: Any, by: str) -> None:
        if self.code is None and self.accepted:
            self.code = str(code if code is not None else 1000)
            metrics.SOCKET_CLOSES.labels(self.kind, self.code, by).inc()

    def done(self) -> None:
        if self.accepted:
            metrics.SOCKETS.labels(self.kind).dec()
            health.socket_closed(self.kind, self.slug)
