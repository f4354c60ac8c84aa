"""An aiortc WHEP viewer for tests: receive-only video + audio, decoding what arrives."""

from __future__ import annotations

import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError


class WhepReceiver:
    """The peer side of a WHEP viewer; how its offer reaches the server is the subclass's.

    ``sizes``: every decoded video frame's size; ``audio_frames``: decoded audio frames;
    ``ended``: the kinds whose track the server ended."""

    def __init__(self, *, video_codec: str | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video = self.pc.addTransceiver("video", direction="recvonly")
        if video_codec:  # offer only this codec (e.g. to be refused)
            video.setCodecPreferences(
                [
                    c
                    for c in RTCRtpSender.getCapabilities("video").codecs
                    if c.mimeType.lower() == f"video/{video_codec}"
                ]
            )
        self.pc.addTransceiver("audio", direction="recvonly")
        self.sizes: list[tuple[int, int]] = []
        self.audio_frames = 0
        self.ended: set[str] = set()
        self.got_video = asyncio.Event()
        self.readers: list[asyncio.Task] = []
        self.pc.on(
            "track", lambda track: self.readers.append(asyncio.create_task(self._read(track)))
        )

    async def _read(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.sizes.append((frame.width, frame.height))
                    self.got_video.set()
                else:
                    self.audio_frames += 1
        except MediaStreamError:
            self.ended.add(track.kind)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def close(self) -> None:
        await self.pc.close()
        for task in self.readers:
            task.cancel()
