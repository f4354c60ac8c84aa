"""The benchmarks' WebSocket clients, one per job.

* ``WsClient``/``ws_connect``/``close_all``: a lean asyncio client (a ``Protocol``, no task
  per socket, about 1 KB each), so one client process can hold ~10,000 sockets and the
  client is not what limits a connect-rate measurement (``ws_capacity``, ``presence``). It
  speaks just enough RFC 6455 for these servers: no extensions, unmasked server frames,
  masked client frames, answers pings.
* ``RelayClient``/``relay_connect``: a ``websockets`` library client with a reader task that
  keeps relayed offers as raw text with their arrival time, for timing addressed delivery
  (``signaling``, and ``server_rooms``' isolation probe). The relay figures and their raw
  ``websockets`` peer were measured with this client: the lean one would change the client's
  share of every latency, so both stay, each for its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.offers import OFFER_PREFIX, SIGNAL_TYPES
from bench.support import HOST

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


# --- relay client (websockets library) ------------------------------------------------------------


class PhaseFailed(Exception):
    """An error message, a closed socket or a stall ended a phase early."""


@dataclass
class Endpoint:
    """Where one client connects: our room socket (``token``) or the raw relay (``None``)."""

    port: int
    slug: str | None = None
    token: str | None = None

    @property
    def url(self) -> str:
        if self.token is None:
            return f"ws://{HOST}:{self.port}/"
        return f"ws://{HOST}:{self.port}/ws/rooms/{self.slug}/?token={self.token}&v=1"


class RelayClient:
    """One socket with a reader task. Offers are kept as raw text with their arrival time
    (parsed only after the clock stops); anything else is parsed and kept in ``others``."""

    def __init__(self, name: str, ws: Any, peer_id: str) -> None:
        self.name = name
        self.ws = ws
        self.peer_id = peer_id
        self.offers: list[str] = []
        self.others: list[dict[str, Any]] = []
        self.joined: set[str] = set()
        self.joined_event = asyncio.Event()
        self.want = 0
        self.waiter: asyncio.Future[float] | None = None
        self.reply: asyncio.Future[tuple[float, dict[str, Any]]] | None = None
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.partner: RelayClient | None = None  # whose waiter fails if this one sees an error

    async def heard_of(self, peers: set[str]) -> None:
        """Return once ``peer-joined`` arrived for each of ``peers``."""
        while not peers <= self.joined:
            self.joined_event.clear()
            await self.joined_event.wait()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._read())

    def arm(self, count: int) -> asyncio.Future[float]:
        """A future resolved (with the arrival time) when ``count`` more offers are in."""
        self.want = len(self.offers) + count
        self.waiter = asyncio.get_running_loop().create_future()
        return self.waiter

    def expect_reply(self) -> asyncio.Future[tuple[float, dict[str, Any]]]:
        self.reply = asyncio.get_running_loop().create_future()
        return self.reply

    def fail(self, reason: str) -> None:
        for future in (self.waiter, self.reply):
            if future is not None and not future.done():
                future.set_exception(PhaseFailed(f"{self.name}: {reason}"))

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        clock = time.perf_counter
        try:
            async for text in self.ws:
                now = clock()
                if text.startswith(OFFER_PREFIX):
                    self.offers.append(text)
                    waiter = self.waiter
                    if waiter is not None and len(self.offers) >= self.want and not waiter.done():
                        waiter.set_result(now)
                    continue
                message = json.loads(text)
                self.others.append(message)
                kind = message.get("type")
                if self.reply is not None and not self.reply.done() and kind in ("error", "pong"):
                    self.reply.set_result((now, message))
                elif kind == "peer-joined":
                    self.joined.add(message["peer"])
                    self.joined_event.set()
                elif kind == "error":
                    reason = f"error {message.get('code')}: {message.get('message')}"
                    self.fail(reason)
                    if self.partner is not None:
                        self.partner.fail(reason)
        except ConnectionClosed as exc:
            self.fail(f"socket closed ({exc})")
        finally:
            self.closed = True
            self.fail("socket closed")
            if self.partner is not None:
                self.partner.fail(f"{self.name}'s socket closed")

    def signals(self) -> int:
        """Relayed signaling messages received (offers, and any answer/candidate)."""
        return len(self.offers) + sum(1 for m in self.others if m.get("type") in SIGNAL_TYPES)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.ws.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


async def relay_connect(name: str, endpoint: Endpoint, limit_s: float) -> RelayClient:
    from websockets.asyncio.client import connect

    async with asyncio.timeout(limit_s):
        ws = await connect(
            endpoint.url,
            origin=f"http://{HOST}:{endpoint.port}",  # type: ignore[arg-type]
            compression=None,  # Daphne does not negotiate permessage-deflate either
            ping_interval=None,
            max_size=2**20,
            max_queue=None,
        )
        if endpoint.token is None:
            await ws.send(json.dumps({"type": "register", "id": secrets.token_hex(6)}))
        welcome = json.loads(await ws.recv())
    if welcome.get("type") != "welcome":
        await ws.close()
        raise PhaseFailed(f"{name}: expected welcome, got {welcome}")
    client = RelayClient(name, ws, welcome["you"]["peer"])
    client.start()
    return client
