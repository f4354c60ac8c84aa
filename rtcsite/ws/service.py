"""The room service's health, per process: what sockets do while Redis is away.

Sockets reach each other through the channel layer and find each other through presence,
both in Redis when ``REDIS_URL`` is set. When Redis goes away (a restart, a network blip)
every socket path that touches it fails at once; before this module each failure ended its
consumer with a traceback and close 1011, and nothing was re-established afterwards
(issue 15: a 1 s restart closed 231 of 300 sockets and left ghosts forever).

Here the first Redis error any socket path meets marks the service **down** for the whole
process (one log line per outage, not one traceback per socket); sockets stay open, are
told ``{"type": "service", "state": "reconnecting"}``, and signaling sent meanwhile is
answered ``service-unavailable``. A probe pings Redis every ``SERVICE_PROBE_INTERVAL``;
when it answers the process **re-establishes what it holds**, in this order:

1. its presence lease (``presence.backends``: other processes' sweepers expire presences of
   a process without one),
2. the leaves it could not make while down (sockets that went away meanwhile),
3. its sockets' channel subscriptions and every group membership (``group_add`` calls go
   through ``group_add`` here, which records them),
4. every live place (``presence.membership``), re-tracked under the same peer id, capacity
   checked (a place lost to a full room ends its socket with ``room-full``); each re-track
   is announced as a join, so sockets that already resynced learn peers re-tracked later,
5. after ``SERVICE_RESYNC_DELAY`` (the other processes re-track meanwhile: they probe at the
   same pace) every socket resyncs its client (``service_resync``: the room's peer list, the
   lobby's snapshot) and is told ``{"type": "service", "state": "ok"}``.

Redis keeps nothing on disk here, so after a restart presence is exactly what the live
sockets re-track: the truth, within ``SERVICE_PROBE_INTERVAL + SERVICE_RESYNC_DELAY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rtcsite.errors import ClientError

if TYPE_CHECKING:
    from presence.membership import Membership

logger = logging.getLogger(__name__)

#: what a socket path raises when Redis is unreachable (``BusyLoadingError``, Redis loading
#: its data after a start, is a ``ConnectionError``); a refused or reset connection can
#: escape redis-py's wrapping as the builtin (channels_redis' pub/sub reader)
SERVICE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionRefusedError,
    ConnectionResetError,
)


class ServiceUnavailable(ClientError):
    """The room service (Redis) is away: the message could not be delivered. Not the
    client's fault; it is told when the service is back (``service`` ``ok``)."""

    code, status = "service-unavailable", 503
    client_fault = False

    def __init__(self, message: str = "", **details: Any) -> None:
        details.setdefault("retry_after", 1)
        super().__init__(
            message or "The room service is reconnecting; try again in a moment.", **details
        )


class ServiceSocket(Protocol):
    """What the service needs of a socket (``JsonSocketConsumer`` implements it)."""

    channel_name: str

    async def service_notify(self, state: str) -> None: ...

    async def service_resync(self) -> None: ...

    async def service_lost_place(self, error: ClientError) -> None: ...


class RoomService:
    """This process's view of the room service (see the module docstring); one per loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.up = True
        self.sockets: dict[str, ServiceSocket] = {}  # channel name -> socket
        self.groups: dict[str, set[str]] = {}  # channel name -> groups it was added to
        self.places: dict[tuple[str, str], Membership] = {}  # (room, peer id) -> place
        self.pending_leaves: set[tuple[str, str]] = set()  # (room, peer id) to untrack
        self.layer: Any = None  # the channel layer the groups live in
        self.outages = 0
        self._probe: asyncio.Task[None] | None = None
        self._recovered = asyncio.Event()
        self._recovered.set()

    # --- failure ------------------------------------------------------------------------
    def failed(self, error: BaseException | str, where: str = "") -> None:
        """A socket path met a Redis error (or the presence sweeper found this process's
        lease lost: Redis restarted without any call failing, redis-py retried through
        it): mark the service down (logged once per outage) and start probing; recovery
        re-establishes everything. Cheap and idempotent: every socket of the process calls
        it."""
        if not self.up:
            return
        self.up = False
        self.outages += 1
        self._recovered.clear()
        logger.warning(
            "room service down (%s%s); sockets stay open, probing every %.1fs",
            where + ": " if where else "",
            error if isinstance(error, str) else f"{type(error).__name__}: {error}",
            settings.SERVICE_PROBE_INTERVAL,
        )
        self._spawn(self._broadcast("reconnecting"))
        if self._probe is None or self._probe.done():
            self._probe = self._spawn(self._probe_until_up())

    def require_up(self) -> None:
        """Refuse at once what needs Redis while it is away (no wait on a dead socket)."""
        if not self.up:
            raise ServiceUnavailable()

    async def wait_up(self, at_most: float) -> None:
        """Until the service is re-established, at most ``at_most`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._recovered.wait(), at_most)

    # --- what this process holds --------------------------------------------------------
    def add_socket(self, socket: ServiceSocket) -> None:
        self.sockets[socket.channel_name] = socket

    def remove_socket(self, socket: ServiceSocket) -> None:
        if self.sockets.get(socket.channel_name) is socket:
            del self.sockets[socket.channel_name]
        self.groups.pop(socket.channel_name, None)

    async def group_add(self, layer: Any, group: str, channel: str) -> None:
        """``layer.group_add``, recorded so that recovery adds it again."""
        self.layer = layer
        self.groups.setdefault(channel, set()).add(group)
        await layer.group_add(group, channel)

    async def group_discard(self, layer: Any, group: str, channel: str) -> None:
        """``layer.group_discard``; while down only forgotten (the groups Redis held are
        gone or will be re-made without it)."""
        groups = self.groups.get(channel)
        if groups is not None:
            groups.discard(group)
        if not self.up:
            return
        try:
            await layer.group_discard(group, channel)
        except SERVICE_ERRORS as exc:
            self.failed(exc, "group_discard")

    def hold(self, place: Membership) -> None:
        self.places[(place.room, place.peer_id)] = place
        self.pending_leaves.discard((place.room, place.peer_id))

    def release(self, place: Membership) -> None:
        self.places.pop((place.room, place.peer_id), None)

    def leave_later(self, room: str, peer_id: str) -> None:
        """A leave that failed while down: made on recovery (announced then)."""
        self.pending_leaves.add((room, peer_id))

    # --- recovery -----------------------------------------------------------------------
    async def _probe_until_up(self) -> None:
        from presence.backends import get_backend

        while True:
            await asyncio.sleep(settings.SERVICE_PROBE_INTERVAL)
            try:
                await get_backend().ping()
                await self._reestablish()
            except SERVICE_ERRORS:
                continue  # still away (or went away again mid-recovery)
            except Exception:
                logger.exception("room service recovery failed; retrying")
                continue
            break
        self.up = True
        self._recovered.set()
        logger.warning(
            "room service back: %d sockets, %d places, %d groups re-established",
            len(self.sockets),
            len(self.places),
            sum(len(g) for g in self.groups.values()),
        )
        await asyncio.sleep(settings.SERVICE_RESYNC_DELAY)
        if self.up:  # not down again meanwhile (then the next recovery resyncs)
            await self._each(lambda socket: socket.service_resync(), "resync")

    async def _reestablish(self) -> None:
        """Steps 1-4 of the module docstring; a Redis error aborts (the probe retries)."""
        from presence import membership
        from presence import services as presence
        from presence.backends import get_backend
        from rtcsite.process import PROCESS_ID

        await get_backend().renew_lease(PROCESS_ID)
        for room, peer_id in list(self.pending_leaves):
            await presence.leave(room, peer_id)
            self.pending_leaves.discard((room, peer_id))
        layer = self.layer
        if layer is not None:
            resubscribe = getattr(layer, "resubscribe", None)
            for channel in list(self.sockets):
                if resubscribe is not None:
                    await resubscribe(channel)
                for group in list(self.groups.get(channel, ())):
                    await layer.group_add(group, channel)
        places = list(self.places.values())
        lost = await asyncio.gather(*(membership.retrack(place) for place in places))
        for place, error in zip(places, lost, strict=True):
            if error is not None:
                socket = self.sockets.get(place.channel)
                if socket is not None:
                    self._spawn(socket.service_lost_place(error))

    async def _broadcast(self, state: str) -> None:
        await self._each(lambda socket: socket.service_notify(state), "notify")

    async def _each(self, call: Any, what: str) -> None:
        """``call(socket)`` for every socket, concurrently; one failure is one socket's."""
        sockets = list(self.sockets.values())
        results = await asyncio.gather(*(call(s) for s in sockets), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            logger.warning(
                "room service %s: %d of %d sockets failed", what, len(errors), len(sockets)
            )
            for error in errors:
                if isinstance(error, SERVICE_ERRORS):
                    self.failed(error, what)
                    break

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
        return task


_tasks: set[asyncio.Task[Any]] = set()  # strong references to the service's tasks
_service: RoomService | None = None


def service() -> RoomService:
    """This process's room service, on the running loop (tests run several loops)."""
    global _service
    if _service is None or _service.loop is not asyncio.get_running_loop():
        _service = RoomService()
    return _service
