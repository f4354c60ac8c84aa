"""In-process presence backend: the embedded default (one Daphne process, no Redis).

Plain dicts under a ``threading.Lock`` (never held across an ``await``, so it is safe from any
event loop or thread). Presence in one process is invisible to others: use Redis to scale out.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from presence.backends.base import (
    Clock,
    PeerInfo,
    Presence,
    PresenceBackend,
    RoomFull,
    check_ids,
    clean_media,
)


class MemoryPresenceBackend(PresenceBackend):
    """``room -> peer_id -> Presence``; empty rooms are deleted so nothing lingers."""

    def __init__(
        self, *, ttl: float, lease_ttl: float | None = None, clock: Clock = time.time
    ) -> None:
        super().__init__(ttl=ttl, lease_ttl=lease_ttl, clock=clock)
        self._rooms: dict[str, dict[str, Presence]] = {}
        self._leases: dict[str, tuple[float, bool]] = {}  # process -> (expiry, renewed)
        self._lock = threading.Lock()
        self._last_purge = clock()

    async def track(
        self, room: str, peer_id: str, peer: PeerInfo, *, capacity: int | None = None
    ) -> Presence:
        check_ids(room, peer_id)
        with self._lock:
            now = self.clock()
            self._purge_stale(now)
            members = self._rooms.get(room, {})
            mine = members.get(peer_id)
            if mine is not None and not mine.is_live(now):
                mine = None
            if capacity is not None:
                live = sum(1 for p in members.values() if p.is_live(now)) - (mine is not None)
                if live >= capacity:
                    raise RoomFull(room, capacity)
            if peer.media is not None:
                media = clean_media(peer.media)
            else:
                media = dict(mine.media) if mine is not None else {}
            presence = peer.presence(
                room,
                peer_id,
                joined_at=now if mine is None else mine.joined_at,
                media=media,
                expires_at=now + self.ttl,
            )
            self._rooms.setdefault(room, {})[peer_id] = presence
            if self._leases.get(peer.process, (0.0, False))[0] <= now:
                self._leases[peer.process] = (now + self.lease_ttl, False)
            return presence

    async def refresh(self, room: str, peer_id: str) -> bool:
        with self._lock:
            now = self.clock()
            presence = self._rooms.get(room, {}).get(peer_id)
            if presence is None or not presence.is_live(now):
                return False
            self._rooms[room][peer_id] = dataclasses.replace(presence, expires_at=now + self.ttl)
            until, renewed = self._leases.get(presence.process, (0.0, False))
            if until > now:  # a live lease is extended, a lapsed one is not revived
                self._leases[presence.process] = (now + self.lease_ttl, renewed)
            return True

    async def update_media(
        self, room: str, peer_id: str, media: dict[str, bool]
    ) -> Presence | None:
        with self._lock:
            presence = self._rooms.get(room, {}).get(peer_id)
            if presence is None or not presence.is_live(self.clock()):
                return None
            updated = dataclasses.replace(presence, media={**presence.media, **clean_media(media)})
            self._rooms[room][peer_id] = updated
            return updated

    async def untrack(self, room: str, peer_id: str) -> Presence | None:
        with self._lock:
            members = self._rooms.get(room)
            if not members:
                return None
            presence = members.pop(peer_id, None)
            if not members:
                del self._rooms[room]
            return presence

    async def list_room(self, room: str) -> list[Presence]:
        with self._lock:
            now = self.clock()
            live = [p for p in self._rooms.get(room, {}).values() if p.is_live(now)]
        return sorted(live, key=lambda p: (p.joined_at, p.peer_id))

    async def room_counts(self) -> dict[str, int]:
        with self._lock:
            now = self.clock()
            counts = {
                room: sum(1 for p in members.values() if p.is_live(now))
                for room, members in self._rooms.items()
            }
        return {room: n for room, n in counts.items() if n}

    async def expire(self) -> list[Presence]:
        with self._lock:
            now = self.clock()
            dead = {process for process, (until, _) in self._leases.items() if until <= now}
            for process in dead:
                del self._leases[process]
            removed = self._remove_where(lambda p: not p.is_live(now) or p.process in dead)
        return sorted(removed, key=lambda p: (p.expires_at, p.room, p.peer_id))

    async def renew_lease(self, process: str) -> bool:
        with self._lock:
            now = self.clock()
            until, renewed = self._leases.get(process, (0.0, False))
            self._leases[process] = (now + self.lease_ttl, True)
            return renewed and until > now

    async def process_alive(self, process: str) -> bool:
        with self._lock:
            return self._leases.get(process, (0.0, False))[0] > self.clock()

    def _purge_stale(self, now: float) -> None:
        """Drop presences dead for over a further ``ttl`` (no sweeper is running), at most
        once per ``ttl`` so ``track`` stays cheap in big rooms."""
        if now - self._last_purge < self.ttl:
            return
        self._last_purge = now
        self._remove_where(lambda p: p.expires_at < now - self.ttl)

    def _remove_where(self, doomed: Callable[[Presence], bool]) -> list[Presence]:
        """Remove matching presences (caller holds the lock); delete emptied rooms."""
        removed: list[Presence] = []
        for room in list(self._rooms):
            members = self._rooms[room]
            for peer_id in [c for c, p in members.items() if doomed(p)]:
                removed.append(members.pop(peer_id))
            if not members:
                del self._rooms[room]
        return removed
