"""WHIP clients for tests against a real Daphne: HTTP requests as RFC 9725 has them, a Python
aiortc publisher (trickling its candidates by PATCH), and FFmpeg's own ``-f whip`` muxer."""

from __future__ import annotations

import asyncio
import fractions
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass

import av
import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


def request(
    method: str, url: str, *, body: str | bytes | None = None, headers: dict | None = None
) -> Reply:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return Reply(response.status, dict(response.headers), response.read().decode())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read().decode())


def post_offer(
    server, slug: str, key: str | None, sdp: str | bytes, *, content_type="application/sdp"
) -> Reply:
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return request("POST", f"{server.url}/streams/{slug}/whip/", body=sdp, headers=headers)


def resource(server, location: str) -> str:
    return location if location.startswith("http") else server.url + location


class Pattern(VideoStreamTrack):
    """A moving test picture; ``silent_after``: stops producing frames after that many
    (a publisher that hangs without closing its connection)."""

    def __init__(self, width: int = 320, height: int = 240, silent_after: int | None = None):
        super().__init__()
        self.width, self.height = width, height
        self.silent_after = silent_after
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        if self.silent_after is not None and self.count >= self.silent_after:
            await asyncio.Event().wait()  # never set: silence, the connection stays up
        pts, time_base = await self.next_timestamp()
        image = np.zeros((self.height, self.width, 3), np.uint8)
        x = (self.count * 4) % self.width
        image[:, x : x + 16] = (255, 255, 0)
        image[: self.height // 2, :, 2] = 128
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base or fractions.Fraction(1, 90000)
        self.count += 1
        return frame


class WhipPublisher:
    """aiortc publishing over WHIP: the offer without candidates (POST), then the candidates
    as a trickle fragment (PATCH with the ETag), as browsers do; ``close`` DELETEs."""

    def __init__(self, server, slug: str, key: str, *, audio: bool = True, **video):
        self.server, self.slug, self.key = server, slug, key
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video = Pattern(**video)
        self.pc.addTransceiver(self.video, direction="sendonly")
        if audio:
            self.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        self.location: str | None = None
        self.etag: str | None = None
        self.candidates: list[str] = []

    async def offer(self) -> str:
        """The full offer (aiortc gathers before it returns), candidates split off."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        lines = self.pc.localDescription.sdp.split("\r\n")
        self.candidates = [line for line in lines if line.startswith("a=candidate:")]
        kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-cand"))]
        return "\r\n".join(kept)

    async def publish(self) -> Reply:
        sdp = await self.offer()
        reply = await asyncio.to_thread(post_offer, self.server, self.slug, self.key, sdp)
        if reply.status != 201:
            return reply
        self.location = resource(self.server, reply.headers["Location"])
        self.etag = reply.headers["ETag"]
        await self.pc.setRemoteDescription(RTCSessionDescription(reply.body, "answer"))
        return reply

    def fragment(self) -> str:
        ufrag = pwd = ""
        for line in self.pc.localDescription.sdp.split("\r\n"):
            if line.startswith("a=ice-ufrag:"):
                ufrag = line
            if line.startswith("a=ice-pwd:"):
                pwd = line
        return (
            "\r\n".join([ufrag, pwd, "m=video 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0", *self.candidates])
            + "\r\na=end-of-candidates\r\n"
        )

    async def patch(self, body: str, *, if_match: str | None = "etag", content_type=None) -> Reply:
        headers = {
            "Content-Type": content_type or "application/trickle-ice-sdpfrag",
            "Authorization": f"Bearer {self.key}",
        }
        if if_match is not None:
            headers["If-Match"] = self.etag if if_match == "etag" else if_match
        return await asyncio.to_thread(request, "PATCH", self.location, body=body, headers=headers)

    async def delete(self, key: str | None = None) -> Reply:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return await asyncio.to_thread(request, "DELETE", self.location, headers=headers)

    async def wait_connected(self, within: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.pc.connectionState != "connected":
            assert loop.time() < deadline, f"not connected: {self.pc.connectionState}"
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        await self.pc.close()


async def some_offer() -> str:
    """A usable publisher offer (video + audio), for requests that need only its text."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="sendonly")
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def ffmpeg_whip(ffmpeg: str, url: str, key: str, seconds: float) -> subprocess.Popen:
    """FFmpeg's WHIP muxer publishing a generated 640x480 30 fps picture with a tone:
    H.264 without B-frames (libx264, its default High profile) and stereo 48 kHz Opus."""
    return subprocess.Popen(
        [
            *(ffmpeg, "-hide_banner", "-loglevel", "warning", "-re"),
            *("-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30"),
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
            *("-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "0"),
            *("-g", "30", "-tune", "zerolatency", "-preset", "veryfast"),
            *("-c:a", "libopus", "-ac", "2", "-ar", "48000"),
            *("-f", "whip", "-authorization", key, url),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
