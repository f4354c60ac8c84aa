"""The base of every WebSocket consumer of the site.

It does, once, what every socket needs: authenticate the signed token from the query
string, close with a documented code when that fails, parse and bound incoming JSON
messages (strict JSON, valid Unicode: what the channel layer can carry), rate-limit, answer
bad input with an ``error`` message while keeping the connection up, and send nothing (nor
handle queued frames) once the socket is closed. Subclasses implement ``on_connect`` and
``handle_<type>`` methods (``type`` with dashes turned into underscores) and raise
``rtcsite.errors.ClientError`` for anything the client must be told; this module turns it
into the ``error`` message.
Close codes (``codes.py``) and error codes are documented in docs/protocol.md.

Redis errors (the room service away, ``rtcsite.ws.service``) never end a consumer: the
layer's receive loop retries with backoff, a client message that needed Redis is answered
``service-unavailable``, a connect is refused with close 4014 (the client retries), and
the socket is told ``service`` ``reconnecting``/``ok``; on recovery ``resync_client``
brings the client back to the truth.

**Forked from Channels** (checked against channels 4.x; re-check on every Channels
upgrade): ``AsyncConsumer.__call__`` and ``dispatch``. Channels waits on the socket and the
channel layer with ``asyncio.wait`` and starts a task per message, and closes stale
database connections (a thread hop) before every handler. Here the socket's messages are
dispatched in the consumer's own task and the layer's in one long-lived task, under one
small lock, with the same guarantees (one handler at a time, order kept per source, the
first error ends the consumer), for less memory per socket and a cheaper connect
(``bench ws_capacity``; docs/decisions.md, "Connection capacity"). If a Channels release
changes ``AsyncConsumer.__call__``, ``dispatch`` or ``get_handler_name``, compare first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Any, NoReturn
from urllib.parse import parse_qs

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from identity.services import Identity
from identity.tokens import TokenError, verify_token
from rtcsite import logctx, metrics
from rtcsite.errors import ClientError, NotFound, RateLimited, TooLarge
from rtcsite.http import scope_address
from rtcsite.ratelimit import TokenBucket
from rtcsite.waiters import Waiters
from rtcsite.ws.codes import PROTOCOL_VERSION, TOKEN_CLOSE_CODES, CloseCode
from rtcsite.ws.service import SERVICE_ERRORS, ServiceUnavailable, service

logger = logging.getLogger(__name__)

#: what a server's ``send`` raises on a closed socket: ASGI says an ``OSError``; Daphne lets
#: Autobahn's ``Disconnected`` through between a close frame and ``websocket.disconnect``
SEND_ON_CLOSED = (OSError, Disconnected)

#: backoff of the layer's receive loop while Redis is away (seconds)
RECEIVE_RETRY_MIN, RECEIVE_RETRY_MAX = 0.25, 2.0

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _refuse_constant(name: str) -> NoReturn:
    """Python's json reads ``NaN``/``Infinity``; JSON has neither, nor can we echo them."""
    raise ClientError(f"{name} is not JSON.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: valid JSON syntax, no finite value
        raise ClientError("Numbers must be finite.")
    return value


#: the one decoder of client messages (a module-level one: ``json.loads`` with hooks would
#: build a decoder per message)
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
#: ``allow_nan=False``: a bug raises here rather than sending NaN/Infinity, which are not JSON
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _has_lone_surrogate(content: Any) -> bool:
    """Whether a string (or key) anywhere in the parsed message holds a surrogate code
    point: only a lone ``\\udXXX`` escape makes one (a valid pair decodes to one
    character). Such strings cannot be encoded as UTF-8, so msgpack (the Redis channel
    layer) raises on them in the sender's handler."""
    stack = [content]
    while stack:  # iterative: parsed JSON may nest nearly as deep as the recursion limit
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class DispatchLock(Waiters):
    """``asyncio.Lock`` for a consumer's two message sources, a few bytes per socket.

    ``asyncio.Lock`` keeps the deque it makes on first contention (every room socket
    contends at connect: a presence event arrives while ``welcome`` is being sent), ~0.7 KB
    held per socket. Here waiters are a list made on contention and dropped when empty; the
    lock is handed straight to the next waiter, and a waiter cancelled after being handed it
    passes it on.
    """

    __slots__ = ("locked",)

    def __init__(self) -> None:
        super().__init__()
        self.locked = False

    async def __aenter__(self) -> None:
        if not self.locked:
            self.locked = True
            return
        await self.wait()  # handed the lock by the holder: still locked, now ours

    async def __aexit__(self, *exc_info: object) -> None:
        self.pass_on()

    def pass_on(self) -> None:
        if not self.wake_one():
            self.locked = False


def _cancel_on_failure(task: asyncio.Task[Any] | None) -> Callable[[asyncio.Task[Any]], None]:
    """Done-callback for a consumer's layer task: its error (or ``StopConsumer``) ends the
    consumer's own task, which then re-raises it."""

    def callback(done: asyncio.Task[Any]) -> None:
        if task is not None and not done.cancelled() and done.exception() is not None:
            task.cancel()

    return callback


class JsonSocketConsumer(AsyncJsonWebsocketConsumer):
    """Token-authenticated JSON WebSocket consumer; see the module docstring."""

    #: messages per second sustained, and burst size, per connection
    rate_limit: tuple[float, int] = (20.0, 40)
    #: consecutive bad messages tolerated before the socket is closed
    max_consecutive_errors: int = 20
    #: Channels closes stale database connections before *every* handler call, a
    #: thread-pool hop per message (the largest single cost of a relayed message;
    #: docs/decisions.md, "Socket performance"). Consumers whose handlers reach the
    #: database only through ``database_sync_to_async`` (which does that itself, in the
    #: thread that queries) set this to False.
    close_db_per_message: bool = True
    #: ``ref`` of the errors answering a binary message (what a binary message is here)
    binary_ref: str | None = None
    #: set once the socket is closing or closed (by us or the peer): nothing more is sent
    #: and queued client frames are dropped (a class default: no per-socket memory until set)
    closed: bool = False

    identity: Identity

    async def __call__(self, scope, receive, send) -> None:
        """Channels' ``AsyncConsumer.__call__`` with a leaner dispatch loop.

        Channels waits on the socket and the channel layer with ``asyncio.wait`` and starts a
        new task per message. Here the socket's messages are dispatched in this task and the
        layer's in one long-lived task, both under a lock: the same guarantees (one handler at
        a time, order kept per source, the first error ends the consumer) with one task per
        socket besides Daphne's own and no per-message task or wait set-up (ws_capacity:
        memory held per socket and connect cost).
        """
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self._server_send = send
        lock = self._lock = DispatchLock()
        layer_task: asyncio.Task[None] | None = None
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            layer_task = asyncio.ensure_future(self._pump_layer(lock))
            layer_task.add_done_callback(_cancel_on_failure(asyncio.current_task()))
        try:
            while True:
                message = await receive()
                async with lock:
                    await self.dispatch(message)
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            # cancelled by the layer task's failure (then raise that), or from outside
            if layer_task is None or not layer_task.done() or layer_task.cancelled():
                raise
            error = layer_task.exception()
            if error is None:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if not isinstance(error, StopConsumer):
                raise error from None
        finally:
            if self.authenticated:
                service().remove_socket(self)
            if layer_task is not None and not layer_task.done():
                layer_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await layer_task

    async def _pump_layer(self, lock: DispatchLock) -> None:
        """Dispatch this socket's channel-layer messages until cancelled or a handler fails."""
        layer, channel_name = self.channel_layer, self.channel_name
        delay = RECEIVE_RETRY_MIN
        while True:
            try:
                message = await layer.receive(channel_name)
            except SERVICE_ERRORS as exc:  # Redis away: retry, never end the socket
                room_service = service()
                room_service.failed(exc, "layer receive")
                await room_service.wait_up(delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECEIVE_RETRY_MAX)
                continue
            delay = RECEIVE_RETRY_MIN
            async with lock:
                await self.dispatch(message)

    async def base_send(self, message: dict[str, Any]) -> None:
        """The server's ``send`` (Channels' ``send`` calls this), a no-op once the socket is
        closed. Sending on a closing socket makes Daphne raise ``Disconnected``; events
        (``peer-left``...) and replies to frames received before the close still come, and
        each would end the consumer with a traceback in the server's log."""
        if self.closed:
            logger.debug("not sent, socket closed (%s): %s", self.log_context(), message["type"])
            return
        if message["type"] == "websocket.close":
            self.closed = True
        try:
            await self._server_send(message)
        except SEND_ON_CLOSED:
            self.closed = True
            logger.debug("not sent, socket closed by the peer (%s)", self.log_context())

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Call the handler for ``message['type']`` (see ``close_db_per_message``)."""
        if self.close_db_per_message:
            await super().dispatch(message)
            return
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        """Accept, then authenticate; a refused token is reported and the socket closed.

        Accepting first lets the client learn *why* (an ``error`` message and a close
        code); a handshake refused before accept is only an opaque HTTP 403.
        """
        await self.accept()
        token = self._query_param("token")
        try:
            self.identity = verify_token(token)
        except TokenError as exc:
            await self.refuse(exc, TOKEN_CLOSE_CODES[exc.code])
            return
        logctx.bind(user=self.identity.id)
        version = self._query_param("v")
        if version is not None and version != str(PROTOCOL_VERSION):
            await self.refuse(
                ClientError(
                    f"This server speaks protocol v{PROTOCOL_VERSION}.", code="protocol-version"
                ),
                CloseCode.PROTOCOL_VERSION,
            )
            return
        rate, burst = self.rate_limit
        self._bucket = TokenBucket(rate, burst)
        self._errors = 0
        self._authenticated = True
        try:
            await self.on_connect()
        except SERVICE_ERRORS as exc:
            service().failed(exc, "connect")
            await self.refuse(ServiceUnavailable(), CloseCode.SERVICE_UNAVAILABLE)
        except ServiceUnavailable as exc:
            await self.refuse(exc, CloseCode.SERVICE_UNAVAILABLE)
        if not self.closed:
            service().add_socket(self)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Channels' handler; a Redis error in ``disconnect`` (a ``group_discard``) must not
        keep the consumer alive after its socket is gone."""
        try:
            await super().websocket_disconnect(message)
        except SERVICE_ERRORS as exc:
            service().failed(exc, "disconnect")
            raise StopConsumer() from None

    async def on_connect(self) -> None:
        """Hook: the socket is authenticated (``self.identity`` is set)."""

    def log_context(self) -> str:
        """Who this socket is, for log lines about it (subclasses add room and peer)."""
        identity = getattr(self, "identity", None)
        return f"path={self.scope.get('path')} user={identity.id if identity else '-'}"

    @property
    def client_address(self) -> str:
        """The client's address (Daphne's ``--proxy-headers`` put the proxy's
        ``X-Forwarded-For`` there), for per-address caps; "" if the server gave none."""
        return scope_address(self.scope)

    @property
    def authenticated(self) -> bool:
        return getattr(self, "_authenticated", False)

    def _query_param(self, name: str) -> str | None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        values = query.get(name)
        return values[0] if values else None

    # --- incoming -------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if self.closed or not self.authenticated:
            return  # closed: frames that were already queued are not answered
        if not self._bucket.take():
            await self.reject(RateLimited("Too many messages; slow down."))
            return
        if text_data is None:
            await self.guard(self.receive_bytes(bytes_data or b""), self.binary_ref)
            return
        try:
            content = self._parse(text_data)
        except ClientError as exc:
            await self.reject(exc)
            return
        await self.receive_json(content)

    def _parse(self, text_data: str) -> dict[str, Any]:
        """The message as a JSON object with a string ``type``, within the size limit."""
        limit = settings.WS_MAX_MESSAGE_BYTES
        # characters >= bytes / 4: the cheap check first
        if len(text_data) > limit or len(text_data.encode("utf-8")) > limit:
            raise TooLarge("Message exceeds the size limit.")
        try:
            content = _DECODER.decode(text_data)
        except (ValueError, RecursionError):  # ValueError: also numbers past int's limit
            raise ClientError("Message is not valid JSON.") from None
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            raise ClientError("Message must be an object with a string 'type'.")
        # a surrogate can only come from a \u escape: most messages skip the walk
        if "\\u" in text_data and _has_lone_surrogate(content):
            raise ClientError(
                "Message has a lone surrogate (a \\ud800-\\udfff escape not in a pair): "
                "strings must be valid Unicode."
            )
        return content

    async def receive_bytes(self, data: bytes) -> None:
        """Hook for binary frames; refused unless a subclass handles them."""
        raise ClientError("Binary messages are not accepted on this socket.")

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        msg_type = content["type"]
        handler = getattr(self, "handle_" + msg_type.replace("-", "_"), None)
        if handler is None or not msg_type.replace("-", "").isalnum():
            await self.reject(
                ClientError(f"Unknown message type {msg_type[:40]!r}.", code="unknown-type")
            )
            return
        await self.guard(handler(content), msg_type)

    async def guard(self, work: Awaitable[Any], ref: str | None = None) -> None:
        """Await the handling of one client message: a ``ClientError`` becomes an ``error``
        reply (``ref`` names what it answers), success resets the count of bad messages in
        a row. A refusal that is not the client's fault (``client_fault`` false, e.g.
        ``Busy``) is reported without counting."""
        try:
            await work
        except SERVICE_ERRORS as exc:
            service().failed(exc, ref or "message")
            await self.send_error(ServiceUnavailable(), ref)
            return
        except ClientError as exc:
            if exc.client_fault:
                await self.reject(exc, ref)
            else:
                await self.send_error(exc, ref)
            return
        self._errors = 0

    async def handle_ping(self, content: dict[str, Any]) -> None:
        """Application-level keepalive; echoes ``t`` so clients can measure round trips."""
        reply: dict[str, Any] = {"type": "pong"}
        t = content.get("t")
        if isinstance(t, int) or (isinstance(t, float) and math.isfinite(t)):
            reply["t"] = t
        await self.send_json(reply)

    # --- the room service (rtcsite.ws.service) ------------------------------------------

    async def service_notify(self, state: str) -> None:
        """``{"type": "service", "state": "reconnecting" | "ok"}`` (docs/protocol.md)."""
        await self.send_json({"type": "service", "state": state})

    async def service_resync(self) -> None:
        """The service is back and this process re-established what it holds: bring the
        client back to the truth (``resync_client``), then tell it ``ok``. In handler
        order (under the dispatch lock)."""
        async with self._lock:
            if self.closed:
                return
            await self.resync_client()
            await self.service_notify("ok")

    async def resync_client(self) -> None:
        """Hook: send the client what it may have missed while the service was away."""

    async def service_lost_place(self, error: ClientError) -> None:
        """Recovery could not take this socket's place back (the room filled up)."""
        async with self._lock:
            await self.refuse(error, CloseCode.ROOM_FULL)

    # --- outgoing -------------------------------------------------------------------------

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close with a plain ``int`` code (Daphne/Autobahn refuse IntEnum members)."""
        await super().close(code=int(code) if isinstance(code, IntEnum) else code, reason=reason)

    async def send_error(self, error: ClientError, ref: str | None = None) -> None:
        """``{"type": "error", "code", "message", **details, "ref"}`` (docs/protocol.md)."""
        metrics.WS_ERRORS.labels(error.code).inc()
        payload: dict[str, Any] = {"type": "error", **error.payload()}
        if ref:
            payload["ref"] = ref
        await self.send_json(payload)

    async def refuse(
        self, error: ClientError, close_code: CloseCode, ref: str | None = None
    ) -> None:
        """Tell the client why, then close the socket with ``close_code``."""
        await self.send_error(error, ref)
        await self.close(code=close_code, reason=error.code)

    async def reject(self, error: ClientError, ref: str | None = None) -> None:
        """Report a bad message; close only after many in a row (a broken or hostile client)."""
        self._errors += 1
        logger.info("ws %s (%s): %s", error.code, self.log_context(), error.message)
        await self.send_error(error, ref)
        if self._errors >= self.max_consecutive_errors:
            await self.close(code=CloseCode.TOO_MANY_ERRORS, reason="too-many-errors")

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return _ENCODER.encode(content)


class NotFoundConsumer(JsonSocketConsumer):
    """Catch-all for unknown WebSocket paths: a clear close instead of a server error."""

    async def connect(self) -> None:
        await self.accept()
        await self.refuse(NotFound("No WebSocket endpoint at this path."), CloseCode.NOT_FOUND)
