"""WHIP ingest (RFC 9725): a publisher's WebRTC peer feeding the stream's pipeline.

The publisher (OBS 30+, FFmpeg's ``-f whip``, the publisher page) offers; the server's
aiortc peer answers receive-only, decodes, and hands each frame with its arrival time to
the pipeline (``pipeline.feed_video`` / ``feed_audio``), which paces it to the stream's
frame rate and encodes the same ladder and CMAF outputs as chunk ingest. The pipeline's raw
source starts with the first decoded video frame (its size is the source size; the pipeline
scales later frames of another size, e.g. a browser adapting its resolution, back to it).

The stream goes live within the same caps as chunk ingest (``ingest.go_live_raw``) once the
offer is known to be usable, before any candidate is gathered. It ends as with stop when
the publisher DELETEs its session, its connection fails or closes, or it sends no media for
``STREAM_WHIP_IDLE_TIMEOUT`` seconds (the pipeline's idle timer, set to that for this
stream); whenever the pipeline ends on its own (idle, duration or disk cap, encoder
failure) the peer is closed.

Capture clock: arrival time. The pipeline is given the wall-clock time the first video frame
arrived (decoded) as the stream's media time 0, like a chunk publisher's ``capture_ms``. RTCP
sender reports carry the publisher's own NTP clock, which nothing here can check against
the server's, so the readout measures from arrival at the server: it leaves out capture,
encode and network time on the publisher's side.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError
from django.conf import settings

from rtcsite.errors import ClientError
from streaming import ingest
from streaming.models import Stream
from streaming.rawfeed import RawSource
from streaming.sessions import WebRtcSession, check_stream_offer

logger = logging.getLogger(__name__)

VIDEO_CODECS = ("h264", "vp8")
#: what aiortc's H.264 depacketiser + libavcodec decode: every profile, packetization mode 1
AIORTC_H264_PROFILE = "42e01f"
WATCH_INTERVAL = 0.5
#: the reason of a publisher's DELETE (the stream ends, as with the HTTP stop)
STOPPED_BY_PUBLISHER = "stopped by the publisher"

_FMTP_PROFILE = re.compile(r"profile-level-id=([0-9a-fA-F]{6})")


def check_whip_offer(sdp: str) -> aiortc_sdp.SessionDescription:
    """Refuse an offer WHIP cannot ingest: malformed (400), no video, a video codec other
    than H.264/VP8, audio without Opus, a receive-only or inactive section (422)."""
    return check_stream_offer(
        sdp,
        where="a WHIP publication",
        client_sends=True,
        codecs={
            "video": (frozenset(VIDEO_CODECS), "takes H.264 (no B-frames) or VP8"),
            "audio": (frozenset({"opus"}), "takes Opus (or no audio)"),
        },
        no_video="a stream needs a video track (audio is optional).",
    )


def h264_profiles(sdp: str) -> dict[str, str]:
    """``{payload type: profile-level-id}`` of the offer's H.264 formats."""
    h264 = {
        line.split()[0].split(":", 1)[1]
        for line in sdp.splitlines()
        if line.startswith("a=rtpmap:") and " h264/" in line.lower()
    }
    profiles = {}
    for line in sdp.splitlines():
        if line.startswith("a=fmtp:"):
            pt = line.split()[0].split(":", 1)[1]
            match = _FMTP_PROFILE.search(line)
            if pt in h264 and match:
                profiles[pt] = match.group(1)
    return profiles


def set_h264_profiles(sdp: str, profiles: dict[str, str]) -> str:
    """``sdp`` with the ``profile-level-id`` of each payload type in ``profiles`` set."""
    lines = sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n")
    for index, line in enumerate(lines):
        if line.startswith("a=fmtp:"):
            pt = line.split()[0].split(":", 1)[1]
            if pt in profiles:
                lines[index] = _FMTP_PROFILE.sub(f"profile-level-id={profiles[pt]}", line)
    return ("\r\n" if "\r\n" in sdp else "\n").join(lines)


class WhipSession(WebRtcSession):
    """One publisher's WebRTC ingest into one stream's pipeline."""

    kind = "whip"

    def __init__(self, stream: Stream, address: str = "") -> None:
        super().__init__(stream.slug, address)
        self.stream = stream
        self.live = None  # streaming.registry.LiveStream, once accepted
        self.source = None  # streaming.pipeline.RawSource, once the first frame came
        self.has_audio = False
        self.frames = {"video": 0, "audio": 0}
        self.last_media = time.monotonic()
        self._profiles: dict[str, str] = {}
        self._tracks: dict[str, object] = {}
        self._starting: asyncio.Task | None = None
        self.pc.on("track", self._on_track)

    # --- the contract ------------------------------------------------------------------
    def check(self, offer: str) -> str:
        """Usable for WHIP; H.264 of any profile read as the one aiortc matches.

        aiortc negotiates H.264 constrained baseline only, yet its depacketiser and the
        libavcodec decoder take any profile: FFmpeg offers libx264's High profile, OBS
        whatever its encoder makes. The answer names the offer's own profile again
        (``restore``), so the publisher sends what it offered.
        """
        check_whip_offer(offer)
        self._profiles = h264_profiles(offer)
        return set_h264_profiles(offer, dict.fromkeys(self._profiles, AIORTC_H264_PROFILE))

    def restore(self, answer: str) -> str:
        return set_h264_profiles(answer, self._profiles)

    async def accept(self) -> None:
        """Go live (caps, one publisher per stream), then read the tracks."""
        kinds = {t.kind for t in self.pc.getTransceivers() if t.direction != "inactive"}
        self.has_audio = "audio" in kinds
        self.live = await ingest.go_live_raw(
            self.stream,
            self.address,
            publisher=self,
            idle_timeout=settings.STREAM_WHIP_IDLE_TIMEOUT,
        )
        for kind, track in self._tracks.items():
            self.spawn(self._read(kind, track), f"read {kind}")
        self.spawn(self._watch(), "watch")

    async def ended(self, reason: str) -> None:
        """The stream ends with the publication (as the HTTP stop ends it), unless the
        publication failed before its first frame without the publisher ending it (ICE
        never connected, the answer failed): then the stream stays idle, as an abandoned
        chunk publisher's does, and a new POST may publish it."""
        live = self.live
        if live is None or live.pipeline.closed:
            return
        if self.source is None and reason != STOPPED_BY_PUBLISHER:
            await live.pipeline.stop(reason)  # the row goes back to idle (status.row_values)
        else:
            await live.stop(reason)

    # --- media -------------------------------------------------------------------------
    def _on_track(self, track) -> None:
        if track.kind in ("audio", "video") and track.kind not in self._tracks:
            self._tracks[track.kind] = track

    async def _read(self, kind: str, track) -> None:
        """Decoded frames to the pipeline, stamped with their arrival."""
        try:
            while not self.closed:
                frame = await track.recv()
                arrival = time.monotonic()
                self.last_media = arrival
                self.frames[kind] += 1
                if kind == "video":
                    if self.source is None:
                        await self._start(frame)
                    self.live.pipeline.feed_video(frame, arrival)
                    # as each chunk does: the row's counters, the duration and disk caps
                    self.live.save_progress_if_due()
                elif self.source is not None:  # audio before the first picture: dropped
                    self.live.pipeline.feed_audio(frame, arrival)
        except MediaStreamError:
            if not self.closed:
                self.spawn(self.close(f"the publisher's {kind} track ended"), "close")
        except ClientError as exc:  # the pipeline refused (it closed meanwhile, …)
            if not self.closed:
                self.spawn(self.close(exc.message), "close")
        except Exception:
            logger.exception("whip %s: reading %s failed", self.slug, kind)
            if not self.closed:
                self.spawn(self.close(f"the server failed reading the {kind}"), "close")

    async def _start(self, frame) -> None:
        """The pipeline's raw source, sized by the first picture; media time 0 is now."""
        source = RawSource(frame.width, frame.height, self.has_audio, codec=self._codec())
        await self.live.pipeline.start_raw(source)  # media time 0: now, this arrival
        self.source = source
        logger.info(
            "whip %s: live from %dx%d %s%s",
            self.slug,
            frame.width,
            frame.height,
            source.codec,
            " + Opus" if self.has_audio else "",
        )

    def _codec(self) -> str:
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video" and transceiver._codecs:
                return transceiver._codecs[0].mimeType.split("/")[-1].upper()
        return "H264"

    async def _watch(self) -> None:
        """Close the peer once the stream has ended on its own: the pipeline's idle timer
        (``STREAM_WHIP_IDLE_TIMEOUT``, given to it by ``accept``: a publisher that sends
        nothing), a duration or disk cap, the encoder failing."""
        while not self.closed:
            await asyncio.sleep(WATCH_INTERVAL)
            pipeline = self.live.pipeline
            if pipeline.closed:
                self.spawn(self.close(pipeline.reason or "the stream ended"), "close")
                return


async def publish(stream: Stream, offer: str, address: str) -> tuple[WhipSession, str]:
    """A WHIP publication of ``stream`` (already authenticated): the session and its
    answer. Refusals: unusable offer (400/422), already publishing or ended (409), caps
    (429/503)."""
    session = WhipSession(stream, address)
    answer = await session.answer(offer)
    return session, answer
