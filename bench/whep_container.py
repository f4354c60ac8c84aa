"""WHEP feed container: the delay from a raw frame written into the stream's FFmpeg command
to its WebRTC-output packet demuxed by PyAV, per container (docs/decisions.md, "WHEP: one
WebRTC encode"). From the repo root, under the heavy lock:
``python -m bench.whep_container [nut mpegts matroska none]``. Not a ``bench_`` benchmark: a
one-off measurement kept so that it can be redone (``SECONDS_PER_RUN``, default 10).
``none``: the same command without the WebRTC output, for FFmpeg's CPU time without it.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

W, H, FPS = 640, 480, 30
SAMPLES_PER_FRAME = 48000 // FPS
OPUS_FRAME, OPUS_LOOKAHEAD = 960, 312


def _frames() -> list[bytes]:
    import numpy as np

    y = (np.add.outer(np.arange(H), np.arange(W)) % 256).astype(np.uint8)
    chroma = np.full(W * H // 2, 128, np.uint8)
    return [
        np.concatenate([np.roll(y, i * 8, axis=1).ravel(), chroma]).tobytes() for i in range(FPS)
    ]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] * 1000


def measure(container: str | None, seconds: float) -> dict:
    import av

    from streaming.ffmpeg import EncoderOptions, RawInput, build_command
    from streaming.ladder import configured_ladder, renditions_for_source

    audio_read, audio_write = os.pipe()
    webrtc_read, webrtc_write = os.pipe()
    fcntl.fcntl(webrtc_write, fcntl.F_SETPIPE_SZ, 1 << 20)
    fcntl.fcntl(audio_write, fcntl.F_SETPIPE_SZ, 1 << 20)
    extra = {"webrtc_fd": webrtc_write, "webrtc_container": container} if container else {}
    cmd = build_command(
        tempfile.mkdtemp(),
        renditions_for_source(configured_ladder(), H),  # 480p + 360p; WebRTC 480p
        raw_input=RawInput(W, H, FPS, audio_fd=audio_read),
        options=EncoderOptions.from_settings(),
        **extra,
    )
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, pass_fds=(audio_read, webrtc_write))
    os.close(audio_read)
    os.close(webrtc_write)
    video_written: list[float] = []
    audio_written: list[tuple[float, int]] = []  # (time, samples written so far)
    arrivals: list[tuple[float, str, int, float]] = []
    checks = {"annexb": True, "sps_at_keyframes": True}

    def read() -> None:
        if container is None:
            while os.read(webrtc_read, 1 << 16):
                pass
            return
        demuxer = av.open(
            f"pipe:{webrtc_read}",
            format=container,
            options={"probesize": "32", "analyzeduration": "0"},
        )
        for packet in demuxer.demux():
            if packet.pts is None:
                continue
            now = time.monotonic()
            if packet.stream.type == "video":
                data = bytes(packet)
                checks["annexb"] &= data.startswith((b"\0\0\1", b"\0\0\0\1"))
                if packet.is_keyframe:
                    checks["sps_at_keyframes"] &= b"\0\0\1\x67" in data or b"\0\0\1\x27" in data
            arrivals.append((now, packet.stream.type, packet.pts, float(packet.time_base)))

    reader = threading.Thread(target=read)
    reader.start()
    frames = _frames()
    # FFmpeg stalls after a few frames unless the audio is a little ahead (as a real
    # source's is); 0.1 s here. Audio delays are measured from their samples' write.
    samples = 4800
    os.write(audio_write, bytes(samples * 4))
    audio_written.append((time.monotonic(), samples))
    silence = bytes(SAMPLES_PER_FRAME * 4)
    start = time.monotonic()
    for i in range(int(seconds * FPS)):
        time.sleep(max(0.0, start + i / FPS - time.monotonic()))
        os.write(audio_write, silence)
        samples += SAMPLES_PER_FRAME
        audio_written.append((time.monotonic(), samples))
        proc.stdin.write(frames[i % FPS])
        proc.stdin.flush()
        video_written.append(time.monotonic())
    proc.stdin.close()
    os.close(audio_write)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    cpu = usage.ru_utime + usage.ru_stime
    reader.join()
    os.close(webrtc_read)

    if container is None:
        return {"container": None, "ffmpeg_cores": cpu / seconds}
    video = [a for a in arrivals if a[1] == "video"]
    audio = [a for a in arrivals if a[1] == "audio"]
    video_delays = []
    for at, _, pts, tb in video:
        n = round((pts - video[0][2]) * tb * FPS)
        if n < len(video_written):
            video_delays.append(at - video_written[n])
    audio_delays = []
    for at, _, pts, tb in audio:
        needed = round((pts - audio[0][2]) * tb * 48000) + OPUS_FRAME + OPUS_LOOKAHEAD
        written = next((t for t, s in audio_written if s >= needed), None)
        if written is not None:
            audio_delays.append(at - written)
    video_delays, audio_delays = video_delays[FPS:], audio_delays[50:]  # past start-up
    return {
        "container": container,
        "ffmpeg_cores": cpu / seconds,
        "video_packets": len(video),
        "audio_packets": len(audio),
        "video_p50_ms": _quantile(video_delays, 0.5),
        "video_p95_ms": _quantile(video_delays, 0.95),
        "audio_p50_ms": _quantile(audio_delays, 0.5),
        "audio_p95_ms": _quantile(audio_delays, 0.95),
        **checks,
    }


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
    import django

    django.setup()
    seconds = float(os.environ.get("SECONDS_PER_RUN", "10"))
    for name in sys.argv[1:] or ["nut", "mpegts", "matroska", "none"]:
        print(json.dumps(measure(None if name == "none" else name, seconds)), flush=True)


if __name__ == "__main__":
    main()
