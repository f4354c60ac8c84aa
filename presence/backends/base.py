"""The presence backend interface (like ``django.contrib.sessions.backends.base``).

Vocabulary (the same in code, docs/protocol.md and on the wire): a **peer** is one socket's
place in one room (``peer_id``, random per connection); a **user** is the person behind it
(``user_id``, the identity). Presence is tracked per peer: two tabs of one user are two
peers with the same ``user_id``; the user is in the room while any of them is live. Every
presence carries an expiry (``now + ttl``) that heartbeats push forward, so a process that
dies without untracking leaves no ghost longer than ``ttl``: the ghost stops being listed
at once, and ``expire()`` (run by every process's sweeper) removes it and hands it to
exactly one caller, who announces the leave.

**Process leases.** Every presence names the process holding its socket. A process holds a
lease lasting ``lease_ttl``, renewed by its sweeper every ``PRESENCE_SWEEP_INTERVAL``
(``renew_lease``); ``track`` creates it if missing (a presence is never tracked without
one) and ``refresh`` extends a live one (never revives a lapsed one). When a process dies
without untracking (kill -9) its lease lapses and ``expire()`` removes all its presences,
however long their own ``ttl``: ghosts of a dead process go within ``lease_ttl`` plus a
sweep, and room affinity can ask ``process_alive`` instead of waiting. ``renew_lease``
also says whether the lease was still the one it renewed last time: if not (the store
restarted empty, or the process stalled past its lease and the others expired its
presences), the process must re-track what it holds.

**Operation time** (``at``). The combined operations (below) also return the backend's
time of the operation, in integer microseconds, strictly increasing in the order the
backend ran them (Redis: ``TIME`` inside the operation's script; memory: the clock): a
count stamped ``at`` is the room's count at that point of the backend's order, so whoever
receives counts made by several processes, in any order, keeps the one with the newest
``at`` and is right (lobby pages, stream viewers).

Removal vs. hiding: ``track`` and ``list_room`` *ignore* expired presences but do not delete them,
so that the sweeper still sees each one and the leave event fires exactly once. Only presences
dead for longer than a further ``ttl`` (the sweeper clearly is not running) are dropped silently,
to bound growth.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Joins a room slug and a peer_id into one member of the global expiry index (Redis), so
#: neither may contain it.
SEP = "\x1f"

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Presence:
    """One live connection in one room (slots: the memory backend holds one per socket)."""

    room: str  # room slug (or "lobby"-style key)
    peer_id: str  # the connection's place in the room: random per socket, public
    user_id: str  # the person (identity id): two tabs of one user = two peers, one user
    name: str  # display name
    joined_at: float  # unix time (kept across re-tracks of a still-live connection)
    process: str  # which server process holds the socket, e.g. "host:pid"
    media: dict[str, bool] = field(hash=False)  # e.g. {"audio": True, "video": False}
    expires_at: float
    # Channel-layer name to reach this connection (never sent to browsers).
    channel: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """What identifies a presence: a connection may be in several rooms."""
        return (self.room, self.peer_id)

    def is_live(self, now: float) -> bool:
        return self.expires_at > now

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly copy for server-side use (channel-layer messages, admin); it holds
        the channel name, so do not forward it to browsers as is."""
        return {
            "room": self.room,
            "peer_id": self.peer_id,
            "user_id": self.user_id,
            "name": self.name,
            "joined_at": self.joined_at,
            "process": self.process,
            "media": dict(self.media),
            "expires_at": self.expires_at,
            "channel": self.channel,
        }


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What ``track`` is told about a peer besides its place (room, ``peer_id``): who it is
    and where it is reachable. One value instead of five keywords restated by every backend.
    """

    user_id: str
    name: str
    process: str  # which server process holds the socket, e.g. "host:pid"
    channel: str = ""  # channel-layer name to reach the socket (never sent to browsers)
    # Media flags; None keeps those of a still-live presence on re-track ({} for a new one).
    media: dict[str, bool] | None = field(default=None, hash=False)

    def presence(
        self,
        room: str,
        peer_id: str,
        *,
        joined_at: float,
        media: dict[str, bool],
        expires_at: float,
    ) -> Presence:
        """The presence a backend stored for this peer (``media`` as resolved by the track)."""
        return Presence(
            room=room,
            peer_id=peer_id,
            user_id=self.user_id,
            name=self.name,
            joined_at=joined_at,
            process=self.process,
            media=media,
            expires_at=expires_at,
            channel=self.channel,
        )


class RoomFull(Exception):
    """``track`` refused: the room already holds ``capacity`` live connections."""

    def __init__(self, room: str, capacity: int) -> None:
        super().__init__(f"room {room!r} is full ({capacity} connections)")
        self.room = room
        self.capacity = capacity


def clean_media(media: Mapping[str, Any] | None) -> dict[str, bool]:
    """Media flags as plain ``str -> bool`` (they are stored as JSON)."""
    return {str(k): bool(v) for k, v in (media or {}).items()}


def check_ids(room: str, peer_id: str) -> None:
    """Refuse ids that would be ambiguous in storage keys."""
    for what, value in (("room", room), ("peer_id", peer_id)):
        if not value or SEP in value:
            raise ValueError(f"invalid {what} {value!r}: must be non-empty, without \\x1f")


class PresenceBackend(ABC):
    """Who is in which room, per connection, with expiry.

    ``ttl`` is the expiry window in seconds: a presence not refreshed for ``ttl`` is gone.
    ``clock`` returns unix time; it is injectable so tests control expiry. Backends shared
    between processes (Redis) compare times written by different processes, so those
    processes' clocks must be synchronised (NTP) to well within ``ttl``.
    """

    def __init__(
        self, *, ttl: float, lease_ttl: float | None = None, clock: Clock = time.time
    ) -> None:
        if ttl <= 0 or (lease_ttl is not None and lease_ttl <= 0):
            raise ValueError("ttl and lease_ttl must be positive")
        self.ttl = float(ttl)
        #: how long a process counts as alive after its last lease renewal (default: ttl)
        self.lease_ttl = float(lease_ttl if lease_ttl is not None else ttl)
        self.clock = clock
        self._last_at = 0
        self._at_lock = threading.Lock()

    def stamp(self) -> int:
        """The time of an operation made in this process (module docstring, ``at``): the
        clock in microseconds, made strictly increasing. Backends shared between processes
        stamp inside the store instead."""
        with self._at_lock:
            self._last_at = max(int(self.clock() * 1_000_000), self._last_at + 1)
            return self._last_at

    @classmethod
    def from_settings(cls, settings: Any) -> PresenceBackend:
        """Build from Django settings (``get_backend`` uses this); subclasses read more."""
        return cls(ttl=settings.PRESENCE_TTL, lease_ttl=settings.PRESENCE_LEASE_TTL)

    @abstractmethod
    async def track(
        self, room: str, peer_id: str, peer: PeerInfo, *, capacity: int | None = None
    ) -> Presence:
        """Add (or replace) a peer's presence, atomically checking capacity.

        Expired members do not count. If ``capacity`` is given and the room already has
        ``>= capacity`` live peers other than ``peer_id``, raise ``RoomFull``. Re-tracking a
        live ``peer_id`` keeps its ``joined_at`` (and its media if ``peer.media`` is None) and
        never counts twice.
        """

    @abstractmethod
    async def refresh(self, room: str, peer_id: str) -> bool:
        """Heartbeat: push expiry to ``now + ttl``. ``False`` if the presence is gone or
        already expired, so the caller re-tracks."""

    @abstractmethod
    async def update_media(
        self, room: str, peer_id: str, media: dict[str, bool]
    ) -> Presence | None:
        """Merge ``media`` into a live presence's flags; ``None`` if it is not live."""

    @abstractmethod
    async def untrack(self, room: str, peer_id: str) -> Presence | None:
        """Remove and return the presence (even if expired but not yet swept); ``None`` if
        already gone, so each leave is announced exactly once."""

    @abstractmethod
    async def list_room(self, room: str) -> list[Presence]:
        """Live presences in ``room``, ordered by ``joined_at``."""

    @abstractmethod
    async def room_counts(self) -> dict[str, int]:
        """Live connection count of every room that has at least one."""

    @abstractmethod
    async def expire(self) -> list[Presence]:
        """Remove every expired presence in every room, and every presence of a process
        whose lease has lapsed, and return exactly those removed.

        Atomic: concurrent callers (several processes' sweepers) each get a disjoint share.
        """

    @abstractmethod
    async def renew_lease(self, process: str) -> bool:
        """``process`` is alive for ``lease_ttl`` more seconds. ``True`` if its lease was
        live and last set by ``renew_lease``; ``False`` if it is new: none yet, lapsed, or
        only created by ``track`` (see the module docstring)."""

    @abstractmethod
    async def process_alive(self, process: str) -> bool:
        """Whether ``process`` holds a lease (it tracked, refreshed or renewed within
        ``lease_ttl``)."""

    async def ping(self) -> None:  # noqa: B027 - nothing to reach by default
        """Raise if the store is unreachable (the room service probes with this)."""

    # --- combined operations: one round trip where the backend can ------------------------
    # A join needs the room's members right after tracking (the ``welcome`` list and the
    # lobby count) and a leave needs the count left; a lobby client needs every room. Each
    # also returns its time ``at`` (module docstring). The defaults compose the primitives
    # and stamp in this process, exact when no other process shares the store (memory: the
    # primitives do not await, so nothing runs between them); Redis does each in one script.

    async def track_and_list(
        self, room: str, peer_id: str, peer: PeerInfo, *, capacity: int | None = None
    ) -> tuple[Presence, list[Presence], int]:
        """``track``, then the room's live members (this one included), as of the track."""
        presence = await self.track(room, peer_id, peer, capacity=capacity)
        return presence, await self.list_room(room), self.stamp()

    async def untrack_and_count(self, room: str, peer_id: str) -> tuple[Presence | None, int, int]:
        """``untrack``, and how many live connections the room has left."""
        presence = await self.untrack(room, peer_id)
        return presence, len(await self.list_room(room)), self.stamp()

    async def count_rooms(self, rooms: list[str]) -> tuple[dict[str, int], int]:
        """The live connection count of each of ``rooms`` (0 for an empty one), at one time."""
        counts = await self.room_counts()
        return {room: counts.get(room, 0) for room in rooms}, self.stamp()

    async def snapshot(self) -> tuple[dict[str, list[Presence]], int]:
        """Every room with live members, and them (ordered as ``list_room``)."""
        rooms: dict[str, list[Presence]] = {}
        for room in await self.room_counts():
            people = await self.list_room(room)
            if people:
                rooms[room] = people
        return rooms, self.stamp()

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release connections."""
