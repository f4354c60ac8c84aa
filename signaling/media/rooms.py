"""Echo and relay rooms: what a room socket does with its participant's server peer.

One ``MediaSession`` per room socket of an echo or relay room. The consumer hands it
the validated messages (``offer``, ``candidate``, ``echo-options``) and it answers
through the ``send`` callback. The rules:

* **An offer starts a session.** A second offer (the page reconnected its
  RTCPeerConnection) replaces the previous peer, which is closed first.
* **Echo**: the peer's own sources are plugged into its own slots, video through the
  optional ``FaceOverlay``.
* **Relay**: the two participants' peers meet in a ``RelayRoom`` of this process; each
  one's sources are plugged into the other's slots, and when a participant starts
  watching another, the publisher is asked for a keyframe (PLI). Slots are fixed per
  connection, so arrivals and departures never renegotiate: a departed participant's
  slot simply stops sending until someone is plugged in again.
* Every second the page gets ``media-stats`` (server fps in/out, detection time).
* **Caps**: ``SERVER_ROOM_MAX_PEERS`` peers in this process, of which at most
  ``SERVER_ROOM_MAX_PEERS_PER_IDENTITY`` for one identity and
  ``SERVER_ROOM_MAX_PEERS_PER_ADDRESS`` for one client address (identities are free to
  mint), so one client cannot make everyone else ``server-busy``. Its own cap is checked
  first and answered ``too-many-sessions``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from presence.backends.base import Presence
from rtcsite.errors import Busy, ClientError, RateLimited
from rtcsite.ratelimit import TokenBucket
from signaling.media.faces import FaceOverlay
from signaling.media.peer import MEDIA_KINDS, ServerPeer, live_peers
from signaling.media.recording import ActiveRecording, begin_recording, finish_recording

logger = logging.getLogger(__name__)

SERVER_KINDS = ("echo", "relay")

Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Offers per socket: each one builds a new RTCPeerConnection and gathers ICE (binds UDP
#: sockets), far costlier than a relayed message, so they get their own small budget.
OFFER_RATE = (0.5, 8)  # sustained per second, burst
#: Remote candidates per session: a browser trickles a handful; each one adds ICE pairs.
MAX_CANDIDATES = 40


class RelayRoom:
    """The peers of one relay room that live in this process, cross-plugged."""

    def __init__(self, slug: str) -> None:
        self.slug = slug
        self.peers: dict[str, ServerPeer] = {}

    def add(self, participant: str, peer: ServerPeer) -> None:
        self.peers[participant] = peer
        for other_id, other in self.peers.items():
            if other_id != participant:
                _watch(viewer=peer, publisher=other)
                _watch(viewer=other, publisher=peer)

    def remove(self, participant: str, peer: ServerPeer) -> None:
        if self.peers.get(participant) is not peer:
            return
        del self.peers[participant]
        for other in self.peers.values():
            for slot in other.slots.values():
                if slot.source is not None and slot.source in peer.sources.values():
                    slot.plug(None)


def _watch(*, viewer: ServerPeer, publisher: ServerPeer) -> None:
    """Plug ``publisher``'s media into ``viewer``'s slots; ask for a fresh keyframe."""
    for kind in MEDIA_KINDS:
        slot, source = viewer.slots.get(kind), publisher.sources.get(kind)
        if slot is not None:
            slot.plug(source)
    if "video" in publisher.sources and "video" in viewer.slots:
        publisher.request_keyframe_soon()


_relay_rooms: dict[str, RelayRoom] = {}

#: this process's sessions by owner ("id:<identity>", "addr:<address>"): the per-client caps
_owned: dict[str, set[MediaSession]] = {}


def _holding(owner: str) -> int:
    """Live server peers held by ``owner``'s sessions."""
    return sum(1 for s in _owned.get(owner, ()) if s.peer is not None and not s.peer.closed)


def relay_room(slug: str) -> RelayRoom:
    return _relay_rooms.setdefault(slug, RelayRoom(slug))


def _forget_if_empty(slug: str) -> None:
    room = _relay_rooms.get(slug)
    if room is not None and not room.peers:
        del _relay_rooms[slug]


async def live_members(members: list[Presence]) -> list[Presence]:
    """``members`` but those held by a dead process (its lease lapsed, ``presence.backends``):
    a partner whose process was killed must not send this connection away
    (``media-elsewhere``) until its presence expires; the sweepers remove it soon anyway."""
    from presence.backends import get_backend

    backend = get_backend()
    processes = {p.process for p in members}
    dead = {process for process in processes if not await backend.process_alive(process)}
    return [p for p in members if p.process not in dead]


def joined_elsewhere(kind: str, me: str, members: list[Presence], process: str) -> bool:
    """Room affinity: must this relay connection go to the process its partner is on?

    A relay's two peers must meet in one process (frames do not cross processes). The
    participant who joined *later* yields (ties broken by connection id), so when two
    join at once on different processes exactly one of them is refused.
    """
    if kind != "relay":
        return False
    mine = next((p for p in members if p.peer_id == me), None)
    if mine is None:
        return False
    return any(
        other.peer_id != me
        and other.process != process
        and (other.joined_at, other.peer_id) < (mine.joined_at, mine.peer_id)
        for other in members
    )


class MediaSession:
    """One participant's media in an echo or relay room (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        room_slug: str,
        participant: str,
        send: Send,
        *,
        identity: str = "",
        address: str = "",
    ) -> None:
        if kind not in SERVER_KINDS:
            raise ValueError(f"not a server room kind: {kind}")
        #: the per-client caps: (owner key, limit, what to call it); no address (a server
        #: that gives none, in-process tests): the identity cap only
        self.owners = [(f"id:{identity}", settings.SERVER_ROOM_MAX_PEERS_PER_IDENTITY, "identity")]
        if address:
            self.owners.append(
                (f"addr:{address}", settings.SERVER_ROOM_MAX_PEERS_PER_ADDRESS, "address")
            )
        for owner, _, _ in self.owners:
            _owned.setdefault(owner, set()).add(self)
        self.kind = kind
        self.room_slug = room_slug
        self.participant = participant
        self.send = send
        self.peer: ServerPeer | None = None
        self.overlay: FaceOverlay | None = FaceOverlay() if kind == "echo" else None
        self._stats_task: asyncio.Task | None = None
        self._offers = TokenBucket(*OFFER_RATE)
        self.recording: ActiveRecording | None = None
        self._cap_task: asyncio.Task | None = None  # finishing a recording that hit its cap
        self._candidates = 0
        self._last_counts: tuple[int, int, float] | None = None

    async def offer(self, sdp: str) -> None:
        """Answer an offer with a new server peer (closing any previous one)."""
        if not self._offers.take():
            raise RateLimited("Too many offers: each one starts a new media session.")
        await self._close_peer()
        self._candidates = 0
        for owner, limit, what in self.owners:
            if _holding(owner) >= limit:
                raise ClientError(
                    f"You already have {limit} media sessions open on this server (the "
                    f"limit per {what}): close one (leave that room) first.",
                    code="too-many-sessions",
                    status=429,
                    limit=limit,
                )
        if len(live_peers()) >= settings.SERVER_ROOM_MAX_PEERS:
            raise Busy(
                "This server is running as many media sessions as it is allowed to; "
                "try again later.",
                code="server-busy",
            )
        peer = ServerPeer(
            f"{self.room_slug}/{self.participant}",
            video_filter=self.overlay,
            on_state=self._on_peer_state,
        )
        self.peer = peer
        try:
            answer = await peer.answer(sdp)
        except BaseException:
            await self._close_peer()
            raise
        if self.kind == "echo":
            for kind, slot in peer.slots.items():
                slot.plug(peer.sources.get(kind))
        else:
            relay_room(self.room_slug).add(self.participant, peer)
        await self.send({"type": "answer", "sdp": answer})
        self._ensure_stats()

    async def candidate(self, candidate: dict[str, Any] | None) -> None:
        if self.peer is None:
            raise ClientError(
                "No media session: send an offer before ICE candidates.", code="no-session"
            )
        self._candidates += 1
        if self._candidates > MAX_CANDIDATES:
            raise ClientError(
                f"At most {MAX_CANDIDATES} ICE candidates per session.", code="too-many-candidates"
            )
        await self.peer.add_candidate(candidate)

    def set_faces(self, enabled: bool) -> None:
        if self.overlay is None:
            raise ClientError("Face boxes are an option of echo rooms only.")
        self.overlay.set_enabled(enabled)

    async def set_recording(self, on: bool, user_id: str, name: str) -> None:
        """Start or stop recording this participant's incoming media (if switched on)."""
        if not settings.SERVER_ROOM_RECORDINGS:
            raise ClientError(
                "Recording is switched off on this server.", code="recording-disabled"
            )
        if on and self.recording is None:
            if self.peer is None or not self.peer.sources:
                raise ClientError("Start the media session before recording.", code="no-session")
            self.recording = await begin_recording(
                self.peer.sources,
                self.room_slug,
                self.kind,
                user_id,
                name,
                on_limit=self._recording_capped,
            )
            await self.send({"type": "recording", "on": True})
        elif not on and self.recording is not None:
            await self._stop_recording()

    def _recording_capped(self, limit: str) -> None:
        """The recorder reached RECORDING_MAX_BYTES/SECONDS: finish it as if asked to."""
        active = self.recording
        if active is not None:
            self._cap_task = asyncio.create_task(
                self._stop_recording(active), name=f"recording cap {self.room_slug}"
            )

    async def _stop_recording(self, only: ActiveRecording | None = None) -> None:
        if only is not None and self.recording is not only:
            return  # already stopped (by the participant, a new offer or leaving)
        active, self.recording = self.recording, None
        if active is not None:
            await finish_recording(active)
            message = {
                "type": "recording",
                "on": False,
                "status": active.row.status,
                "seconds": active.row.duration_s,
                "bytes": active.row.size_bytes,
            }
            if active.recorder.limit:
                message["limit"] = active.recorder.limit  # "size" or "duration"
            await self.send(message)

    async def _on_peer_state(self, state: str) -> None:
        if state in ("failed", "closed") and self.kind == "relay" and self.peer is not None:
            relay_room(self.room_slug).remove(self.participant, self.peer)
            _forget_if_empty(self.room_slug)
        await self.send({"type": "server-peer", "state": state})

    def stats(self) -> dict[str, Any]:
        """Server-side figures for the page: frames in/out per second, detection."""
        loop = asyncio.get_running_loop()
        peer = self.peer
        frames_in = peer.sources["video"].frames_in if peer and "video" in peer.sources else 0
        frames_out = peer.slots["video"].frames_out if peer and "video" in peer.slots else 0
        now = loop.time()
        fps_in = fps_out = 0.0
        if self._last_counts is not None:
            last_in, last_out, last_time = self._last_counts
            elapsed = now - last_time
            if elapsed > 0:
                fps_in = max(0, frames_in - last_in) / elapsed
                fps_out = max(0, frames_out - last_out) / elapsed
        self._last_counts = (frames_in, frames_out, now)
        message: dict[str, Any] = {
            "type": "media-stats",
            "state": peer.state if peer else "closed",
            "fps_in": round(fps_in, 1),
            "fps_out": round(fps_out, 1),
            "frames_in": frames_in,
            "frames_out": frames_out,
        }
        if peer is not None:
            message["keyframe_requests"] = peer.keyframe_requests
        if self.overlay is not None:
            message["faces"] = self.overlay.enabled
            message["boxes"] = [box.as_dict() for box in self.overlay.boxes]
            message["detect_ms"] = (
                round(self.overlay.detect_ms, 1) if self.overlay.detect_ms is not None else None
            )
            message["detections"] = self.overlay.detections
            message["scan_ms"] = (
                round(self.overlay.scan_ms, 1) if self.overlay.scan_ms is not None else None
            )
            message["scans"] = self.overlay.scans
        return message

    def _ensure_stats(self) -> None:
        if self._stats_task is None or self._stats_task.done():
            self._stats_task = asyncio.create_task(
                self._send_stats(), name=f"media-stats {self.room_slug}/{self.participant}"
            )

    async def _send_stats(self) -> None:
        interval = settings.SERVER_ROOM_STATS_INTERVAL
        while self.peer is not None and not self.peer.closed:
            await asyncio.sleep(interval)
            try:
                await self.send(self.stats())
            except Exception:  # the socket went away; close() follows
                return

    async def _close_peer(self) -> None:
        try:
            await self._stop_recording()
        except Exception:  # the socket may be gone already; the row is saved first
            logger.info("recording of %s ended with the socket", self.participant)
        peer, self.peer = self.peer, None
        self._last_counts = None
        if peer is None:
            return
        if self.kind == "relay":
            relay_room(self.room_slug).remove(self.participant, peer)
            _forget_if_empty(self.room_slug)
        await peer.close()

    async def close(self) -> None:
        """The participant left: release the peer and every task of this session."""
        task, self._stats_task = self._stats_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._cap_task is not None:  # let a capped recording finish its file and row
            await asyncio.gather(self._cap_task, return_exceptions=True)
        await self._close_peer()
        if self.overlay is not None:
            self.overlay.close()
        for owner, _, _ in self.owners:
            sessions = _owned.get(owner)
            if sessions is not None:
                sessions.discard(self)
                if not sessions:
                    del _owned[owner]
