"""One participant's server-side WebRTC peer (aiortc) in an echo or relay room.

The browser offers, the server answers. aiortc gathers all of its own ICE candidates
before it answers (they are in the answer's SDP), so only the browser trickles; its
candidates are added as they come. Each offered audio/video section gets a
``FrameSource`` (what the browser sends) and a ``SlotTrack`` (what the server sends back),
which the room plugs together: echo plugs a peer's sources into its own slots, relay
into the other participant's.

Everything a peer owns (the RTCPeerConnection with its ICE/DTLS transports and UDP
sockets, decoder threads, sender tasks, our reader tasks) is released by ``close()``,
which the socket calls on leave/disconnect and the peer calls itself when ICE fails.
``live_peers()`` lets tests (and the admin of a busy server) count what is left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import OperationError
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp
from django.conf import settings

from rtcsite.errors import ClientError
from rtcsite.ice import client_ice_servers
from signaling.media import audio_level
from signaling.media.tracks import FrameFilter, FrameSource, SlotTrack

logger = logging.getLogger(__name__)

MEDIA_KINDS = ("audio", "video")
#: how long the server waits for the publisher's first video packet before a PLI
KEYFRAME_WAIT_SECONDS = 10.0

_live: set[ServerPeer] = set()

audio_level.install()  # aiortc's per-frame audio level loop ran on the event loop


def live_peers() -> set[ServerPeer]:
    """Server peers of this process that are not closed yet."""
    return set(_live)


def rtc_configuration() -> RTCConfiguration:
    """ICE servers from settings, as for browsers (TURN REST credentials derived).

    An empty list means no STUN/TURN at all: aiortc would otherwise default to a public
    STUN server, which loopback tests and closed networks cannot reach.
    """
    servers = [
        RTCIceServer(
            urls=entry["urls"],
            username=entry.get("username"),
            credential=entry.get("credential"),
        )
        for entry in client_ice_servers(settings.ICE_SERVERS, "server")
    ]
    return RTCConfiguration(iceServers=servers)


def candidate_allowed(host: str) -> bool:
    """May the server send STUN checks to ``host``, an address a client named?

    Only public addresses, unless SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES: otherwise any
    visitor could make the server probe its own loopback or the private network it sits in
    (a port scan by proxy). mDNS names (``….local``) resolve to LAN addresses by design.
    """
    if settings.SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name (mDNS): only ever a LAN address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global


def drop_private_candidates(sdp: str) -> str:
    """The offer without ``a=candidate`` lines that :func:`candidate_allowed` refuses."""
    if settings.SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES:
        return sdp
    kept = []
    for line in sdp.splitlines(keepends=True):
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) < 5 or not candidate_allowed(fields[4]):
                continue  # field 5 of a candidate line is its address
        kept.append(line)
    return "".join(kept)


def check_offer(sdp: str, where: str = "a server room") -> None:
    """Refuse offers the server cannot serve, with a reason a person can act on.

    ``where``: what the offer is for, as the refusals name it (WHIP ingest reuses this).
    """
    try:
        parsed = aiortc_sdp.SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever the bad line provokes
        raise ClientError(f"The offer is not valid SDP ({exc!s:.120}).", code="bad-sdp") from exc
    kinds = [media.kind for media in parsed.media]
    if not any(kind in MEDIA_KINDS for kind in kinds):
        raise ClientError(
            "The offer has no audio or video section: nothing to send or receive.", code="no-media"
        )
    unsupported = sorted({kind for kind in kinds if kind not in MEDIA_KINDS})
    if unsupported:
        raise ClientError(
            f"{where[0].upper()}{where[1:]} carries audio and video only, "
            f"not {', '.join(unsupported)}.",
            code="unsupported-media",
        )
    for kind in MEDIA_KINDS:
        if kinds.count(kind) > 1:
            raise ClientError(f"Send at most one {kind} track to {where}.", code="too-many-tracks")
    for media in parsed.media:
        if media.port != 0 and (not media.ice.usernameFragment or not media.ice.password):
            raise ClientError("The offer has no ICE credentials.", code="bad-sdp")
        if media.port != 0 and media.dtls is None:
            raise ClientError("The offer has no DTLS fingerprint.", code="bad-sdp")


class ServerPeer:
    """An aiortc RTCPeerConnection answering one browser, with its sources and slots."""

    def __init__(
        self,
        name: str,
        *,
        video_filter: FrameFilter | None = None,
        on_state: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.video_filter = video_filter
        self.pc = RTCPeerConnection(configuration=rtc_configuration())
        self.sources: dict[str, FrameSource] = {}
        self.slots: dict[str, SlotTrack] = {}
        self.closed = False
        self.keyframe_requests = 0
        self._on_state = on_state
        self._tasks: set[asyncio.Task] = set()
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)
        _live.add(self)

    @property
    def state(self) -> str:
        return self.pc.connectionState

    @property
    def remote_ufrag(self) -> str | None:
        description = self.pc.remoteDescription
        if description is None:
            return None
        for line in description.sdp.splitlines():
            if line.startswith("a=ice-ufrag:"):
                return line.split(":", 1)[1].strip()
        return None

    async def answer(self, sdp: str) -> str:
        """Take the browser's offer; return the server's answer SDP (candidates included)."""
        check_offer(sdp)
        sdp = drop_private_candidates(sdp)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except OperationError as exc:
            raise ClientError(
                f"No codec in common ({exc}): the server speaks VP8/H.264 video and "
                "Opus/PCMU/PCMA audio.",
                code="unsupported-codec",
            ) from exc
        except Exception as exc:  # aiortc raises ValueError/KeyError/... on odd offers
            raise ClientError(f"The offer was refused ({exc!s:.120}).", code="bad-sdp") from exc
        for transceiver in self.pc.getTransceivers():
            kind = transceiver.kind
            if kind in MEDIA_KINDS and kind not in self.slots:
                slot = SlotTrack(kind, self.video_filter if kind == "video" else None)
                self.slots[kind] = slot
                self.pc.addTrack(slot)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        return self.pc.localDescription.sdp

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None:
        """A trickled browser candidate (already shape-checked by signaling.messages)."""
        if self.pc.remoteDescription is None:
            raise ClientError("Send an offer before ICE candidates.", code="no-session")
        if candidate is None or not candidate["candidate"]:
            return  # end of candidates: aiortc needs no marker (it has all it will get)
        ufrag = candidate.get("usernameFragment")
        if ufrag and ufrag != self.remote_ufrag:
            raise ClientError(
                "This candidate belongs to an earlier or unknown session.", code="unknown-session"
            )
        text = candidate["candidate"].removeprefix("a=").removeprefix("candidate:")
        try:
            parsed: RTCIceCandidate = candidate_from_sdp(text)
        except Exception as exc:
            raise ClientError(
                "The ICE candidate could not be parsed.", code="bad-candidate"
            ) from exc
        if not candidate_allowed(parsed.ip):
            return  # dropped like an unreachable candidate: no STUN check goes there
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
            parsed.sdpMLineIndex = 0
        try:
            await self.pc.addIceCandidate(parsed)
        except Exception as exc:
            raise ClientError(
                f"The ICE candidate was refused ({exc!s:.80}).", code="bad-candidate"
            ) from exc

    def _on_track(self, track) -> None:
        if track.kind in MEDIA_KINDS and track.kind not in self.sources:
            self.sources[track.kind] = FrameSource(track, self.name)

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        logger.info("server peer %s: connection %s", self.name, state)
        if self._on_state is not None and not self.closed:
            await self._on_state(state)
        if state == "failed":
            await self.close()

    # --- keyframes -------------------------------------------------------------------------

    def request_keyframe_soon(self) -> None:
        """Ask the browser for a keyframe (RTCP PLI) as soon as its video SSRC is known.

        Called when someone starts watching this peer's video, so the picture starts at
        once instead of at the browser's next scheduled keyframe (the original's lesson).
        """
        if not self.closed:
            self._spawn(self._request_keyframe(), "keyframe")

    async def _request_keyframe(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KEYFRAME_WAIT_SECONDS
        while not self.closed and loop.time() < deadline:
            for transceiver in self.pc.getTransceivers():
                if transceiver.kind != "video":
                    continue
                receiver = transceiver.receiver
                sources = receiver.getSynchronizationSources()
                if sources:
                    for source in sources:
                        # aiortc has no public API for this; its receiver sends PLIs itself
                        # on decode errors through the same method.
                        await receiver._send_rtcp_pli(source.source)
                    self.keyframe_requests += 1
                    return
            await asyncio.sleep(0.1)

    def _spawn(self, coro, what: str) -> None:
        task = asyncio.create_task(coro, name=f"server-peer {self.name} {what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- teardown ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop tracks, tasks, the connection (ICE/DTLS, UDP sockets, codec threads)."""
        if self.closed:
            return
        self.closed = True
        _live.discard(self)
        for slot in self.slots.values():
            slot.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.pc.close()
        except Exception:  # a half-negotiated connection must still be released
            logger.exception("server peer %s: error while closing", self.name)
        for source in self.sources.values():
            await source.close()
