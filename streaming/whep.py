"""WHEP playback (draft-ietf-wish-whep): a viewer's WebRTC peer fed the stream's one
WebRTC encode.

The viewer offers (receive-only audio and video); the server's aiortc peer answers with
send-only H.264 + Opus transceivers whose tracks return the stream's **encoded** packets
(``streaming.whep_feed.EncodedFeed``): aiortc's sender sees an ``av.Packet`` instead of a
frame and only packetises it (``encoder.pack``), so a viewer costs packetising and SRTP,
never an encoder. Consequences, each a choice:

* **Codecs are fixed**: the packets are H.264 (constrained baseline, packetization-mode 1)
  and Opus; the transceivers are created before the offer is read with their codec
  preferences set to just those, so the answer cannot pick VP8. An offer without H.264
  is refused (422).
* **No keyframe on demand**: a PLI/FIR only flags aiortc's own encoder, which a packet
  track never has. A new viewer's video starts at the encoder's next keyframe (the GOP is
  ``STREAM_WHEP_GOP_SECONDS``); a viewer that falls behind skips to the next one.
* **Caps**: ``STREAM_WHEP_MAX_VIEWERS`` sessions per process (503: the process is full,
  not the viewer's fault) and ``STREAM_WHEP_MAX_VIEWERS_PER_ADDRESS`` per client address
  (429), counted from the moment a POST is accepted, so concurrent POSTs cannot pass them.
* **Who may watch**: anyone who may open the stream's watch page (streams have no private
  mode: the slug is the capability), while the stream is live in this process.
* **Viewer counts**: each session takes a place in the stream's audience
  (``presence.membership``, as a viewer page's socket does), heartbeated while it lasts,
  so the viewer count and the lobby include WHEP viewers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiortc import RTCRtpSender
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from identity.services import Identity, new_identity_id
from presence import membership
from presence import services as presence
from presence.membership import Membership
from rtcsite.errors import Busy, Conflict, NotFound, RateLimited
from rtcsite.quotas import address_key
from rtcsite.ws.service import SERVICE_ERRORS, ServiceUnavailable
from streaming import registry, services
from streaming.models import StreamStatus
from streaming.sessions import WebRtcSession, check_stream_offer
from streaming.whep_feed import EncodedFeed, FeedEnded, Subscription

logger = logging.getLogger(__name__)

#: What the feed's packets are, as aiortc names the codecs.
CODEC_MIMES = {"video": "video/H264", "audio": "audio/opus"}
VIEWER_NAME = "WHEP viewer"

# Every WHEP session of this process from the moment its POST was accepted (the caps).
_viewers: set[WhepSession] = set()


class PacketTrack(MediaStreamTrack):
    """A track whose ``recv`` returns the feed's encoded packets (see the module docstring):
    aiortc's sender packetises them as they are."""

    def __init__(self, subscription: Subscription) -> None:
        super().__init__()
        self.kind = subscription.kind
        self.subscription = subscription

    async def recv(self):  # -> av.Packet
        try:
            return await self.subscription.get()
        except FeedEnded:
            self.stop()
            raise MediaStreamError from None

    def stop(self) -> None:
        super().stop()
        self.subscription.close()


def codec_preferences(kind: str) -> list:
    """The capabilities of the feed's codec for ``kind`` (with RTX for video: NACKed
    packets are retransmitted from the sender's history, no encoder needed)."""
    mime = CODEC_MIMES[kind].lower()
    wanted = {mime, "video/rtx"} if kind == "video" else {mime}
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    return [c for c in codecs if c.mimeType.lower() in wanted]


def check_whep_offer(sdp: str) -> aiortc_sdp.SessionDescription:
    """Refuse an offer WHEP cannot serve: malformed (400), no video or no H.264 in it,
    audio without Opus, a section that will not receive (422)."""
    once = "(the stream is encoded once for every viewer)"
    return check_stream_offer(
        sdp,
        where="a WHEP viewer",
        client_sends=False,
        codecs={
            kind: (frozenset({mime.split("/")[-1].lower()}), f"sends {mime.split('/')[-1]} {once}")
            for kind, mime in CODEC_MIMES.items()
        },
        no_video="a WHEP viewer receives the stream's video (and audio).",
    )


class WhepSession(WebRtcSession):
    """One viewer's WebRTC playback of one live stream's WebRTC rendition."""

    kind = "whep"

    def __init__(
        self, slug: str, address: str, feed: EncodedFeed, pipeline, *, peer: str | None = None
    ) -> None:
        super().__init__(slug, address)
        self.feed = feed
        self.pipeline = pipeline
        self.peer = peer  # the viewer page's own audience place, if it named one
        self.address_key = address_key(address)
        self.tracks: list[PacketTrack] = []
        self.place: Membership | None = None
        _viewers.add(self)

    # --- the contract ------------------------------------------------------------------
    def check(self, offer: str) -> str:
        """Usable for WHEP; the send-only transceivers exist before aiortc reads the offer
        (it picks each section's codecs then, from the transceivers' preferences)."""
        parsed = check_whep_offer(offer)
        kinds = [m.kind for m in parsed.media if m.port != 0]
        for kind in ("video", "audio"):
            if kind not in kinds:
                continue
            try:
                track = PacketTrack(self.feed.subscribe(kind))
            except FeedEnded:
                raise Conflict("The stream ended.", code="closed") from None
            self.tracks.append(track)
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(codec_preferences(kind))
        return offer

    async def accept(self) -> None:
        """Count the viewer in the stream's audience; end with the stream."""
        await self._join_audience()
        self.spawn(self._follow_stream(), "follow")

    async def ended(self, reason: str) -> None:
        _viewers.discard(self)
        for track in self.tracks:
            track.stop()
        await membership.leave(self.place)

    # --- internals ---------------------------------------------------------------------
    async def _join_audience(self) -> None:
        """A place in the stream's viewer room, like a viewer page's socket (its own
        channel, drained: the room's events are for sockets). Without the room service
        (Redis away) the viewer still plays, uncounted. A viewer page names its socket's
        place (``?peer=``): that place already counts this viewer, so none is taken (a
        client can only make itself uncounted this way, never count twice)."""
        if self.peer and membership.PEER_ID_RE.fullmatch(self.peer):
            room = services.viewer_room(self.slug)
            with contextlib.suppress(*SERVICE_ERRORS):
                if any(m.peer_id == self.peer for m in await presence.members(room)):
                    return
        layer = get_channel_layer()
        channel = await layer.new_channel()
        user = Identity(new_identity_id(), VIEWER_NAME)
        try:
            self.place, _ = await membership.join(
                layer, channel, services.viewer_room(self.slug), user, capacity=None
            )
        except ServiceUnavailable:
            logger.warning("whep %s of %s: not counted (room service away)", self.id[:8], self.slug)
            return
        self.spawn(self._drain(layer, channel), "drain")
        self.spawn(self._heartbeat(), "heartbeat")

    async def _drain(self, layer, channel: str) -> None:
        while True:
            await layer.receive(channel)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(settings.PRESENCE_HEARTBEAT_INTERVAL)
            try:
                await membership.heartbeat(self.place)
            except Conflict:  # only for rooms with a capacity: an audience has none
                return

    async def _follow_stream(self) -> None:
        await self.pipeline.wait_closed()
        await self.close("the stream ended")


def _check_caps(address: str) -> None:
    """Over a cap → refused before any peer work (see the module docstring)."""
    limit = settings.STREAM_WHEP_MAX_VIEWERS
    if limit and len(_viewers) >= limit:
        raise Busy(f"This server plays to at most {limit} WebRTC viewers at once: try later.")
    per_address = settings.STREAM_WHEP_MAX_VIEWERS_PER_ADDRESS
    key = address_key(address)
    # No address (a Unix socket without proxy headers): not counted per address, as quotas.
    if per_address and key and sum(1 for v in _viewers if v.address_key == key) >= per_address:
        raise RateLimited(
            f"At most {per_address} WebRTC viewers per address: close one to open another.",
            retry_after=5,
        )


def viewer_count(slug: str | None = None) -> int:
    """WHEP sessions of this process (of one stream if given), answered or being answered."""
    return sum(1 for v in _viewers if slug is None or v.slug == slug)


async def watch(
    slug: str, offer: str, address: str, *, peer: str | None = None
) -> tuple[WhepSession, str]:
    """A WHEP viewer of stream ``slug``: the session and its answer. Refusals: no such
    stream (404), not live here or WHEP off (409), unusable offer (400/422), caps
    (429/503). ``peer``: the viewer page's audience place (``?peer=`` of the POST), so
    that the page is counted once."""
    stream = await database_sync_to_async(services.get_stream)(slug)
    if stream is None:
        raise NotFound("No such stream.")
    live = registry.get(slug)
    if live is None and stream.status == StreamStatus.LIVE:
        raise Conflict(
            "The stream is live in another server process (the proxy routes a stream's "
            "requests to one process by its slug).",
            code="wrong-process",
        )
    if live is None or live.pipeline.closed:
        raise Conflict(
            f"The stream is {stream.status}, not live: WHEP plays live streams only "
            "(an ended stream plays over HLS or DASH).",
            code="not-live",
        )
    feed = live.pipeline.webrtc_feed
    if feed is None or feed.closed:
        raise Conflict("This stream has no WebRTC rendition (STREAM_WHEP is off).", code="no-whep")
    _check_caps(address)
    session = WhepSession(slug, address, feed, live.pipeline, peer=peer)
    return session, await session.answer(offer)  # a refusal closes it (caps place freed)
