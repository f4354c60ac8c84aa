"""WHEP viewers for ``bench_whep``'s cost part, and the same-run comparison peer.

* ``viewers_main``: a process of its own (``python -m bench.whep_viewers``) holding N aiortc
  WHEP viewers of one URL, grown in steps (1, 10, 50...). Per step it waits until every
  viewer has a picture, lets them run, then samples a window: video/audio frames each
  viewer received, and the CPU seconds of the server's processes (``/proc``, this machine)
  and of itself. It prints one JSON document.
* Viewers do not decode: every viewer but the first gets a ``CountingDecoder`` (a complete
  encoded frame from aiortc's jitter buffer counts as a frame; H.264 IDR frames are noted).
  Fifty 480p decoders would take this 2-core machine from the server being measured. The
  first viewer decodes for real, so the picture's size is checked.
* ``peer_main``: the comparison peer, a bare aiortc server answering the same WHEP POST
  (``/packets`` or ``/encode``) from one 640x480 30 fps H.264 + Opus clip: ``/packets``
  hands every viewer the clip's encoded packets through one ``MediaRelay``
  (``MediaPlayer(decode=False)``: aiortc's own one-encode fan-out, the floor), ``/encode``
  decodes the clip once and gives every viewer its own aiortc encoder (libx264 + Opus per
  sender: the per-viewer-encode baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")
IDR_NAL_TYPES = (5,)


# --- pure helpers (unit-tested) -----------------------------------------------------------------


def h264_has_idr(data: bytes) -> bool:
    """Whether an Annex-B access unit holds an IDR slice (a picture a new viewer can start on)."""
    i = 0
    n = len(data)
    while True:
        i = data.find(b"\x00\x00\x01", i)
        if i < 0 or i + 3 >= n:
            return False
        if data[i + 3] & 0x1F in IDR_NAL_TYPES:
            return True
        i += 3


def h264_rtp_keyframe(payload: bytes) -> bool:
    """Whether an H.264 RTP payload (RFC 6184: single NAL, STAP-A, FU-A) carries an IDR
    slice or an SPS (sent with each keyframe): a frame a new viewer can start on."""
    if not payload:
        return False
    kind = payload[0] & 0x1F
    if kind == 28:  # FU-A: the fragmented NAL's type is in the FU header
        return len(payload) > 1 and (payload[1] & 0x1F) in (5, 7)
    if kind == 24:  # STAP-A: 2-byte size + NAL, repeated
        i = 1
        while i + 2 < len(payload):
            size = int.from_bytes(payload[i : i + 2], "big")
            if payload[i + 2] & 0x1F in (5, 7):
                return True
            i += 2 + size
        return False
    return kind in (5, 7)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the server's FFmpeg children), from ``/proc``."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                text = Path(f"/proc/{current}/task/{task}/children").read_text()
                todo += [int(child) for child in text.split()]
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def cpu_snapshot(root_pid: int) -> dict[int, tuple[str, float]]:
    out = {}
    for pid in process_tree(root_pid):
        seconds = cpu_seconds(pid)
        if seconds is not None:
            out[pid] = (process_name(pid), seconds)
    return out


def cores_between(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall_s: float
) -> dict[str, float]:
    """Cores (CPU s per wall s) per process name between two snapshots: the root's own
    name and, e.g., ``ffmpeg`` for its encoder children; only processes in both."""
    cores: dict[str, float] = {}
    for pid, (name, end) in after.items():
        if pid in before:
            cores[name] = cores.get(name, 0.0) + (end - before[pid][1]) / wall_s
    return {name: round(value, 4) for name, value in cores.items()}


# --- viewers ------------------------------------------------------------------------------------


class CountingDecoder:
    """Stands in for aiortc's decoder: one tiny frame per complete encoded frame, carrying
    the encoded size and whether it was an IDR (``frame.opaque``), so a viewer costs this
    process packets and SRTP, not a decode."""

    def __init__(self, kind: str, real: Any = None) -> None:
        import av

        self.kind, self.real, self._av = kind, real, av

    def decode(self, encoded_frame: Any) -> list[Any]:
        av = self._av
        idr = self.kind == "video" and h264_has_idr(encoded_frame.data)
        if self.real is not None:
            frames = self.real.decode(encoded_frame)
            for frame in frames:
                frame.opaque = (len(encoded_frame.data), idr)
            return frames
        if self.kind == "video":
            frame = av.VideoFrame(2, 2, "yuv420p")
        else:
            frame = av.AudioFrame(format="s16", layout="mono", samples=1)
        frame.pts = encoded_frame.timestamp
        frame.opaque = (len(encoded_frame.data), idr)
        return [frame]


_decoders_made = {"video": 0}
_decoders_lock = threading.Lock()


def install_counting_decoders() -> None:
    """Patch aiortc's receiver: the first video decoder made in this process decodes for
    real (viewer 0, the picture check), every other one counts. A receiver given a
    ``_bench_count`` (every viewer but the first) skips even that: after SRTP and the RTCP
    statistics (its receiver reports still go out) each RTP packet is only counted, a video
    frame at its marker bit: aiortc's jitter buffer, depacketiser, decoder thread and track
    queue cost the viewers' process ~4 % of a core per 480p viewer, which would make the
    clients, not the server, the limit at 50 viewers on two cores."""
    import aiortc.rtcrtpreceiver as receiver
    from aiortc.codecs import get_decoder as real_get_decoder

    original = receiver.RTCRtpReceiver._handle_rtp_packet

    async def handle_rtp_packet(self: Any, packet: Any, arrival_time_ms: int) -> None:
        count = getattr(self, "_bench_count", None)
        if count is None:
            return await original(self, packet, arrival_time_ms)
        codec = self._RTCRtpReceiver__codecs.get(packet.payload_type)
        if codec is None:
            return None
        streams = self._RTCRtpReceiver__remote_streams
        if packet.ssrc not in streams:
            streams[packet.ssrc] = receiver.StreamStatistics(codec.clockRate)
        streams[packet.ssrc].add(packet)
        count(packet)
        return None

    receiver.RTCRtpReceiver._handle_rtp_packet = handle_rtp_packet

    def get_decoder(codec: Any) -> Any:
        kind = codec.mimeType.split("/")[0].lower()
        real = None
        if kind == "video":
            with _decoders_lock:
                if _decoders_made["video"] == 0:
                    real = real_get_decoder(codec)
                _decoders_made["video"] += 1
        return CountingDecoder(kind, real)

    receiver.get_decoder = get_decoder


@dataclass
class Viewer:
    index: int
    url: str
    pc: Any = None
    location: str | None = None
    posted_at: float = 0.0
    first_video_s: float | None = None
    first_frame_idr: bool | None = None
    video: int = 0
    audio: int = 0
    video_bytes: int = 0
    idr: int = 0
    size: tuple[int, int] | None = None
    error: str | None = None
    tasks: list = field(default_factory=list)
    connected_state: str = "new"
    last_ts: int | None = None  # media time (90 kHz) of the last video frame
    # per frame since the window began: arrival - media time (s, up to a constant)
    transit: list = field(default_factory=list)
    _media_s: float = 0.0
    _keyframe: bool = False

    def count_video(self, packet: Any) -> None:
        """A light viewer's video RTP packet: a frame ends at the marker bit."""
        self._keyframe = self._keyframe or h264_rtp_keyframe(packet.payload)
        self.video_bytes += len(packet.payload)
        if packet.marker:
            if self.first_frame_idr is None:
                self.first_frame_idr = self._keyframe
            if self.first_video_s is None and self._keyframe:  # a decoder's first picture
                self.first_video_s = time.monotonic() - self.posted_at
            self.video += 1
            self.idr += int(self._keyframe)
            if self.last_ts is not None:
                self._media_s += media_seconds(self.last_ts, packet.timestamp)
            self.transit.append(time.monotonic() - self._media_s)
            self.last_ts = packet.timestamp
            self._keyframe = False

    def count_audio(self, packet: Any) -> None:
        self.audio += 1

    def counts(self) -> tuple[int, int, int, int | None]:
        return self.video, self.audio, self.video_bytes, self.last_ts


def http_request(
    method: str, url: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def connect(viewer: Viewer, light: bool) -> None:
    """A WHEP client as the draft has it: recvonly video + audio offer (non-trickle: aiortc
    gathers before the offer is set), ``POST application/sdp`` → 201 + answer + Location."""
    from urllib.parse import urljoin

    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = viewer.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

    @pc.on("track")
    def on_track(track: Any) -> None:
        viewer.tasks.append(asyncio.ensure_future(consume(viewer, track)))

    @pc.on("connectionstatechange")
    def on_state() -> None:
        viewer.connected_state = pc.connectionState

    for kind in ("video", "audio"):
        transceiver = pc.addTransceiver(kind, direction="recvonly")
        if light:
            transceiver.receiver._bench_count = getattr(viewer, f"count_{kind}")
    await pc.setLocalDescription(await pc.createOffer())
    viewer.posted_at = time.monotonic()
    status, headers, body = await asyncio.to_thread(
        http_request,
        "POST",
        viewer.url,
        pc.localDescription.sdp.encode(),
        {"Content-Type": "application/sdp"},
    )
    if status != 201:
        raise RuntimeError(f"WHEP POST {viewer.url}: {status} {body[:300]!r}")
    location = headers.get("Location") or headers.get("location")
    viewer.location = urljoin(viewer.url, location) if location else None
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))


async def consume(viewer: Viewer, track: Any) -> None:
    from aiortc.mediastreams import MediaStreamError

    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        size, idr = frame.opaque if isinstance(frame.opaque, tuple) else (0, False)
        if track.kind == "video":
            if viewer.first_video_s is None:
                viewer.first_video_s = time.monotonic() - viewer.posted_at
                viewer.first_frame_idr = idr
            viewer.video += 1
            viewer.last_ts = frame.pts
            viewer.video_bytes += size
            viewer.idr += int(idr)
            if frame.width > 2:
                viewer.size = (frame.width, frame.height)
        else:
            viewer.audio += 1


async def close(viewer: Viewer) -> None:
    if viewer.location:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(http_request, "DELETE", viewer.location, None, {})
    if viewer.pc is not None:
        await viewer.pc.close()
    for task in viewer.tasks:
        task.cancel()


async def grow(viewers: list[Viewer], url: str, target: int, batch: int = 5) -> None:
    """Add viewers up to ``target`` (a few connecting at once, as viewers trickle in)."""
    while len(viewers) < target:
        new = [Viewer(len(viewers) + i, url) for i in range(min(batch, target - len(viewers)))]
        viewers += new
        results = await asyncio.gather(
            *(connect(v, light=v.index > 0) for v in new), return_exceptions=True
        )
        for viewer, outcome in zip(new, results, strict=True):
            if isinstance(outcome, BaseException):
                viewer.error = f"{type(outcome).__name__}: {outcome}"


async def wait_pictures(viewers: list[Viewer], limit_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if all(v.first_video_s is not None or v.error for v in viewers):
            break
        await asyncio.sleep(0.1)
    return time.monotonic() - start


def window_figures(
    viewers: list[Viewer],
    before: dict[int, tuple[int, int, int, int]],
    wall_s: float,
    source_fps: float,
) -> dict[str, Any]:
    """Per-viewer rates over a window: frames per wall second, and in media time (from the
    frames' RTP timestamps) frames per media second (frames the server skipped lower it)
    and media seconds per wall second (a server falling behind lowers it)."""
    fps, media_fps, pace, audio_fps, kbps, spreads = [], [], [], [], [], []
    for viewer in viewers:
        if viewer.index not in before:
            continue
        v0, a0, b0, ts0 = before[viewer.index]
        v1, a1, b1, ts1 = viewer.counts()
        fps.append((v1 - v0) / wall_s)
        audio_fps.append((a1 - a0) / wall_s)
        kbps.append((b1 - b0) * 8 / 1000 / wall_s)
        spread = arrival_spread_ms(viewer.transit)
        if spread is not None:
            spreads.append(spread)
        media_s = media_seconds(ts0, ts1)
        media_fps.append((v1 - v0) / media_s if media_s else 0.0)
        pace.append(media_s / wall_s)
    return {
        **rate_summary(fps, media_fps, pace, audio_fps, kbps, source_fps),
        "arrival_spread_p95_ms_median": median(spreads),
        "arrival_spread_p95_ms_max": max(spreads) if spreads else None,
    }


def media_seconds(ts0: int | None, ts1: int | None, clock: int = 90_000) -> float:
    """Media time between two 32-bit RTP timestamps (wrap included); 0 if one is missing."""
    if ts0 is None or ts1 is None:
        return 0.0
    return ((ts1 - ts0) % 2**32) / clock


def arrival_spread_ms(transit: list[float]) -> float | None:
    """How late frames arrive against their media time, beyond the earliest of the window:
    the p95 of (arrival - media time) - its minimum. A receiver's jitter buffer has to
    hold about this much to play every frame on time (Chromium sizes its own from it)."""
    if len(transit) < 2:
        return None
    low = min(transit)
    ordered = sorted(t - low for t in transit)
    return round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000, 1)


def median(values: list[float]) -> float | None:
    return round(sorted(values)[len(values) // 2], 2) if values else None


def rate_summary(
    fps: list[float],
    media_fps: list[float],
    pace: list[float],
    audio_fps: list[float],
    kbps: list[float],
    source_fps: float,
) -> dict[str, Any]:
    """A viewer is at full frame rate when it got >= 29/30 of the source's frames per media
    second (the bar stream_latency uses for browsers) and its media time kept >= 95 % of
    wall time over the window: wall-clock fps alone would also count the source's own
    jitter (a bare ``MediaPlayer`` delivers 14 frames one second and 32 the next)."""
    full = sum(
        1
        for rate, speed in zip(media_fps, pace, strict=True)
        if rate >= source_fps * 29 / 30 and speed >= 0.95
    )
    return {
        "viewers": len(fps),
        "full_rate_viewers": full,
        "video_fps_min": round(min(fps), 2) if fps else None,
        "video_fps_median": median(fps),
        "media_fps_min": round(min(media_fps), 2) if media_fps else None,
        "media_fps_median": median(media_fps),
        "pace_min": round(min(pace), 3) if pace else None,
        "audio_fps_median": median(audio_fps),
        "video_kbps_median": median(kbps),
    }


async def run_viewers(args: argparse.Namespace) -> dict[str, Any]:
    install_counting_decoders()
    viewers: list[Viewer] = []
    steps = []
    me = os.getpid()
    try:
        for target in args.scales:
            t0 = time.monotonic()
            await grow(viewers, args.url, target)
            connect_s = time.monotonic() - t0
            waited = await wait_pictures(viewers, args.picture_limit)
            await asyncio.sleep(args.warmup)
            before = {v.index: v.counts() for v in viewers}
            for viewer in viewers:
                viewer.transit.clear()
            cpu0 = cpu_snapshot(args.server_pid)
            me0 = cpu_seconds(me) or 0.0
            load0 = os.getloadavg()
            w0 = time.monotonic()
            await asyncio.sleep(args.sample)
            wall = time.monotonic() - w0
            cpu1 = cpu_snapshot(args.server_pid)
            me1 = cpu_seconds(me) or 0.0
            step = {
                "viewers": target,
                "connect_s": round(connect_s, 2),
                "pictures_wait_s": round(waited, 2),
                "sample_s": round(wall, 2),
                "server_cores": cores_between(cpu0, cpu1, wall),
                "server_pid_cores": round(
                    (cpu1.get(args.server_pid, ("", 0))[1] - cpu0.get(args.server_pid, ("", 0))[1])
                    / wall,
                    4,
                ),
                "client_cores": round((me1 - me0) / wall, 4),
                "loadavg": [load0[0], os.getloadavg()[0]],
                "errors": [v.error for v in viewers if v.error][:5],
                "error_count": sum(1 for v in viewers if v.error),
                "without_picture": sum(1 for v in viewers if v.first_video_s is None),
                "first_picture_s": sorted(
                    round(v.first_video_s, 3) for v in viewers if v.first_video_s is not None
                ),
                "first_frame_idr": sum(1 for v in viewers if v.first_frame_idr),
                "decoded_size": list(viewers[0].size) if viewers and viewers[0].size else None,
                **window_figures(viewers, before, wall, args.source_fps),
            }
            steps.append(step)
            print(json.dumps({"step": step}), file=sys.stderr, flush=True)
            if args.stop_when_saturated and step["full_rate_viewers"] * 2 < step["viewers"]:
                break
    finally:
        await asyncio.gather(*(close(v) for v in viewers), return_exceptions=True)
    return {"url": args.url, "steps": steps}


def viewers_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.whep_viewers")
    parser.add_argument("--url", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--scales", type=lambda s: [int(x) for x in s.split(",")], required=True)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--sample", type=float, default=10.0)
    parser.add_argument("--picture-limit", type=float, default=30.0)
    parser.add_argument("--source-fps", type=float, default=30.0)
    parser.add_argument("--stop-when-saturated", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(run_viewers(args))
    print(json.dumps(result))


# --- the comparison peer ------------------------------------------------------------------------


CLIP_ENV = "WHEP_BENCH_CLIP"
MODE_ENV = "WHEP_BENCH_MODE"


def make_clip(path: Path, seconds: int, ffmpeg: str) -> Path:
    """640x480 30 fps H.264 (constrained baseline, no B-frames, 1 s GOP, ~1 Mb/s, Annex B
    in MPEG-TS as aiortc's packetiser wants) + 48 kHz stereo Opus: what the WHEP rendition
    is specified to be."""
    import subprocess

    if path.exists() and path.stat().st_size > 0:
        return path
    tmp = path.with_suffix(".part.ts")
    command = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=640x480:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
        "-profile:v", "baseline", "-bf", "0", "-g", "30", "-b:v", "1M", "-maxrate", "1M",
        "-bufsize", "1M", "-pix_fmt", "yuv420p",
        "-c:a", "libopus", "-ac", "2", "-b:a", "64k",
        "-f", "mpegts", str(tmp),
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=600)
    tmp.rename(path)
    return path


class PeerServer:
    """Bare aiortc WHEP-like server (no Django, no site): ``POST /packets`` or ``/encode``."""

    def __init__(self, clip: str) -> None:
        self.clip = clip
        self.sessions: dict[str, Any] = {}
        self.sources: dict[str, tuple[Any, Any, Any]] = {}

    def source(self, mode: str) -> tuple[Any, Any, Any]:
        from aiortc.contrib.media import MediaPlayer, MediaRelay

        if mode not in self.sources:
            player = MediaPlayer(self.clip, decode=(mode == "encode"))
            relay = MediaRelay()
            # Played from the start, as a live stream is before its first viewer: a
            # subscriber that drops everything keeps the player running.
            drains = [
                asyncio.ensure_future(drain(relay.subscribe(track, buffered=False)))
                for track in (player.video, player.audio)
            ]
            self.sources[mode] = (player, relay, drains)
        return self.sources[mode]

    async def answer(self, mode: str, offer: str) -> tuple[str, str]:
        from aiortc import (
            RTCConfiguration,
            RTCPeerConnection,
            RTCRtpSender,
            RTCSessionDescription,
        )

        player, relay, _ = self.source(mode)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        # Sendonly transceivers made before the offer is applied, so their codec preferences
        # (H.264 only, as the site's WHEP answers) decide the answer.
        for kind, track in (("video", player.video), ("audio", player.audio)):
            # Packets queue (dropping one breaks the picture until the next keyframe, and
            # MPEG-TS hands Opus packets over in bursts); decoded video frames go newest-only,
            # so a sender whose encoder lags drops frames as a live server would.
            buffered = not (kind == "video" and mode == "encode")
            transceiver = pc.addTransceiver(relay.subscribe(track, buffered), "sendonly")
            if kind == "video":
                codecs = RTCRtpSender.getCapabilities("video").codecs
                transceiver.setCodecPreferences(
                    [c for c in codecs if c.mimeType.lower() in ("video/h264", "video/rtx")]
                )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        session = secrets.token_urlsafe(16)
        self.sessions[session] = pc
        return session, pc.localDescription.sdp

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if x)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            mode = path.strip("/").split("/")[0]
            if method == "POST" and mode in ("packets", "encode"):
                session, sdp = await self.answer(mode, body.decode())
                reply = sdp.encode()
                status = (
                    f"201 Created\r\nLocation: /session/{session}\r\nContent-Type: application/sdp"
                )
            elif method == "DELETE" and mode == "session":
                pc = self.sessions.pop(path.rstrip("/").split("/")[-1], None)
                if pc is not None:
                    await pc.close()
                reply, status = b"", "200 OK"
            else:
                reply, status = b"not found", "404 Not Found"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: {len(reply)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + reply
            )
            await writer.drain()
        finally:
            writer.close()


async def drain(track: Any) -> None:
    from aiortc.mediastreams import MediaStreamError

    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


def peer_main(port: int) -> None:
    async def main() -> None:
        server = PeerServer(os.environ[CLIP_ENV])
        if os.environ.get(MODE_ENV):
            server.source(os.environ[MODE_ENV])
        listener = await asyncio.start_server(server.handle, "127.0.0.1", port)
        print("ready", flush=True)
        async with listener:
            await listener.serve_forever()

    asyncio.run(main())


if __name__ == "__main__":
    viewers_main()
