"""Shared helpers for the WebSocket benchmarks (``presence``, ``ws_capacity``).

* ``WsClient``/``ws_connect``: a lean asyncio WebSocket client (a ``Protocol``, no task per
  socket, about 1 KB each), so one client process can hold ~10,000 sockets and the client is
  not what limits a connect-rate measurement. It speaks just enough RFC 6455 for these
  servers: no extensions, unmasked server frames, masked client frames, answers pings.
* Daphne servers for the site (``tests.support.daphne.DaphneServer``) with their own SQLite,
  bench rooms created through ``manage.py shell``, optional Redis with a unique key prefix
  (``redis_env``/``delete_keys``).
* Process figures from ``/proc``: RSS, open fds, fd limit, CPU seconds.
* ``raw_server_main``: the peer for ``ws_capacity``, a bare ``websockets`` server (run as
  ``python -c "from bench.support import raw_server_main; raw_server_main()" PORT``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- numbers ----------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (sorts a copy); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# --- limits and /proc -------------------------------------------------------------------------


def raise_nofile() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it).

    Only the soft limit: raising the hard one needs CAP_SYS_RESOURCE.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def proc_status_kb(pid: int, field: str = "VmRSS") -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limit(pid: int) -> tuple[int, int]:
    """(soft, hard) ``Max open files`` of a running process."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise KeyError("Max open files")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop one of our children by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_figures(pid: int) -> dict[str, Any]:
    soft, hard = nofile_limit(pid)
    return {
        "rss_kb": proc_status_kb(pid),
        "open_fds": open_fds(pid),
        "cpu_s": round(cpu_seconds(pid), 3),
        "nofile_soft": soft,
        "nofile_hard": hard,
    }


# --- tokens -------------------------------------------------------------------------------------


def make_tokens(count: int, prefix: str = "bench") -> list[str]:
    """``count`` valid WebSocket tokens for distinct random identities.

    Signed in this process with the settings the servers also read (the same environment,
    so the same ``SECRET_KEY``, the dev default unless one is set).
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
    from identity.services import Identity
    from identity.tokens import issue_token

    return [
        issue_token(Identity(id=secrets.token_hex(8), name=f"{prefix}-{i}")) for i in range(count)
    ]


@contextmanager
def exit_cleanly_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` while benchmarking, so ``finally`` blocks still stop
    the servers we started (by PID) and delete our Redis keys if this process is stopped."""

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- Redis --------------------------------------------------------------------------------------


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def unique_tag(kind: str) -> str:
    return f"rtcsite-bench-{kind}-{uuid.uuid4().hex[:8]}"


def redis_env(tag: str, url: str | None = None) -> dict[str, str]:
    """Server env for the Redis setup (presence + channels-redis), keys under ``tag``."""
    return {
        "REDIS_URL": url or redis_url(),
        "CHANNEL_LAYER_PREFIX": f"{tag}-layer",
        "PRESENCE_KEY_PREFIX": f"{tag}-presence",
    }


EMBEDDED_ENV = {"REDIS_URL": "", "DATABASE_URL": ""}


def delete_keys(tag: str, url: str | None = None) -> int:
    """Delete every Redis key starting with ``tag``; returns how many."""
    import redis

    client = redis.Redis.from_url(url or redis_url())
    try:
        keys = list(client.scan_iter(match=f"{tag}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()


def redis_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


# --- servers ------------------------------------------------------------------------------------


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception))\b", re.M)


def log_error_counts(text: str, top: int = 8) -> dict[str, int]:
    """Exception class names starting lines of a server log (tracebacks' last lines)."""
    return dict(Counter(m.group(1) for m in _ERROR_LINE.finditer(text)).most_common(top))


@contextmanager
def daphne_site(
    env: dict[str, str],
    rooms: int = 0,
    capacity: int = 4,
    report: dict[str, Any] | None = None,
    app: str = "rtcsite.asgi:application",
) -> Iterator[Any]:
    """A Daphne serving the site with its own SQLite (migrated), ``rooms`` mesh rooms
    ``bench-00000``... of ``capacity``; stopped by PID and its temp dir removed afterwards.
    ``report`` (if given) receives ``log_errors``: exception names counted in its log.
    ``app``: another ASGI application on the same setup (a benchmark's bare peer)."""
    from tests.support.daphne import DaphneServer

    server = DaphneServer(env={**env, "LOG_LEVEL": "WARNING"}, app=app)
    try:
        server.manage("migrate", "--noinput", "-v0")
        if rooms:
            server.manage("shell", "-c", create_rooms_code(rooms, capacity))
        server.start(migrate=False, timeout=60)
        yield server
    finally:
        if report is not None:  # before stopping: shutdown cancellations are not findings
            time.sleep(1.0)  # let the last disconnect handlers log
            log = getattr(server, "log_path", None)
            text = log.read_text(errors="replace") if log and log.exists() else ""
            report["log_errors"] = log_error_counts(text)
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def room_slug(i: int) -> str:
    return f"bench-{i:05d}"


def create_rooms_code(count: int, capacity: int) -> str:
    return (
        "from rooms.models import Room\n"
        "Room.objects.bulk_create([Room(slug=f'bench-{i:05d}', title=f'Bench {i}', "
        f"kind='mesh', capacity={capacity}) for i in range({count})], batch_size=500)\n"
    )


# --- lean WebSocket client ----------------------------------------------------------------------

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key: servers do not care which


class WsError(Exception):
    """Handshake refused, an ``error`` message before readiness, or the socket closed."""


def handshake(port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: http://{HOST}:{port}\r\nUser-Agent: rtcsite-bench\r\n\r\n"
    ).encode("latin-1")


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    if not n:
        return head + mask
    stream = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return head + mask + body


OnMessage = Callable[["WsClient", str], None]


class WsClient(asyncio.Protocol):
    """One client socket. ``ready`` resolves with the first JSON message whose ``type`` is
    in ``ready_types``; later text messages go to ``on_message`` and to one ``expect`` waiter.
    """

    __slots__ = (
        "_buf",
        "_frags",
        "_request",
        "_waiter",
        "closed",
        "on_message",
        "ready",
        "ready_types",
        "sent_close",
        "transport",
    )

    def __init__(
        self, request: bytes, ready_types: frozenset[str], on_message: OnMessage | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        self._request = request
        self.ready_types = ready_types
        self.on_message = on_message
        self.ready: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._frags: bytearray | None = None  # None until the 101 response is read
        self._waiter: tuple[asyncio.Future[dict[str, Any]], Callable[[dict], bool]] | None = None
        self.sent_close = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(WsError(f"closed before ready ({exc or 'eof'})"))
        if self._waiter and not self._waiter[0].done():
            self._waiter[0].set_exception(WsError("closed"))
            self._waiter[0].exception()  # mark retrieved: an abandoned waiter is no error
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._frags is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if not status.startswith(b"HTTP/1.1 101"):
                self._fail(f"handshake refused: {status.decode('latin-1')}")
                return
            self._frags = bytearray()
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n, pos = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, pos = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, pos = int.from_bytes(buf[2:10], "big"), 10
            if b1 & 0x80:  # servers must not mask; skip the key if one does
                pos += 4
            if len(buf) < pos + n:
                return
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            self._frame(b0 & 0x0F, bool(b0 & 0x80), payload)

    # frames and messages
    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == 0x9:  # ping
            self._write(frame(0xA, payload))
        elif opcode == 0x8:  # close: echo it (if we did not start), the server drops TCP
            if not self.sent_close:
                self.sent_close = True
                self._write(frame(0x8, payload[:2]))
        elif opcode in (0x0, 0x1, 0x2):
            frags = self._frags
            assert frags is not None
            frags += payload
            if fin:
                text = frags.decode("utf-8", "replace")
                frags.clear()
                self._message(text)

    def _message(self, text: str) -> None:
        if not self.ready.done():
            msg = json.loads(text)
            if msg.get("type") in self.ready_types:
                self.ready.set_result(msg)
            elif msg.get("type") == "error":
                self.ready.set_exception(WsError(f"error {msg.get('code')}"))
            return
        if self.on_message is not None:
            self.on_message(self, text)
        if self._waiter is not None:
            future, predicate = self._waiter
            msg = json.loads(text)
            if not future.done() and predicate(msg):
                self._waiter = None
                future.set_result(msg)

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(WsError(reason))
        self.abort()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # API
    def send_json(self, message: dict[str, Any]) -> None:
        self._write(frame(0x1, json.dumps(message, separators=(",", ":")).encode()))

    def expect(self, predicate: Callable[[dict], bool]) -> asyncio.Future[dict[str, Any]]:
        """A future for the next message matching ``predicate`` (one waiter at a time)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiter = (future, predicate)
        return future

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; ``closed`` resolves when the server drops TCP."""
        if not self.sent_close:
            self.sent_close = True
            self._write(frame(0x8, code.to_bytes(2, "big")))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def ws_connect(
    port: int,
    path: str,
    ready_types: frozenset[str],
    *,
    limit_s: float = 20.0,
    on_message: OnMessage | None = None,
) -> WsClient:
    """Connect, upgrade, and wait for the first message of a ``ready_types`` type."""
    loop = asyncio.get_running_loop()
    client = WsClient(handshake(port, path), ready_types, on_message)
    try:
        async with asyncio.timeout(limit_s):
            await loop.create_connection(lambda: client, HOST, port)
            await client.ready
    except BaseException:
        client.abort()
        raise
    return client


async def close_all(clients: list[WsClient], limit_s: float) -> dict[str, Any]:
    """Closing handshake on every socket; abort those not closed within ``limit_s``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for client in clients:
        client.close()
    pending = [c.closed for c in clients if not c.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=limit_s)
    aborted = 0
    for client in clients:
        if not client.closed.done():
            aborted += 1
            client.abort()
    return {"closed": len(clients) - aborted, "aborted": aborted, "s": loop.time() - start}


# --- raw websockets peer ------------------------------------------------------------------------


def raw_server_main() -> None:
    """A bare ``websockets`` server: greet each socket once, then echo; the peer of
    ``ws_capacity``. Argument: port. Prints ``ready`` when listening."""
    import websockets

    port = int(sys.argv[1])
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
