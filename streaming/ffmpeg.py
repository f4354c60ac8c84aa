"""Which FFmpeg binary the site runs, and the one command a live stream runs.

One FFmpeg process per live stream reads the publisher's WebM from stdin, decodes once,
splits the video into one scaled copy per ladder rung, encodes each with libx264 (keyframe
at every segment boundary) plus one AAC track, and hands everything to the dash muxer,
which writes fMP4 segments (init + ``.m4s``) and *both* a DASH manifest (``manifest.mpd``)
and HLS playlists (``master.m3u8`` + ``media_<n>.m3u8``) for the same segments.

The command is built with ffmpeg-python (filter graph, maps and per-stream options); the
reasons for each latency-relevant option are in ``docs/decisions.md`` ("Streaming").
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import resource
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from streaming.ladder import Rendition, default_bitrates
from streaming.lowlatency import LowLatency

MANIFEST_NAME = "manifest.mpd"
HLS_MASTER_NAME = "master.m3u8"
# The dash muxer's own defaults, passed explicitly so media serving can rely on them.
INIT_SEG_NAME = "init-stream$RepresentationID$.$ext$"
MEDIA_SEG_NAME = "chunk-stream$RepresentationID$-$Number%05d$.$ext$"
# ``extra_window_size``: segments kept on disk beyond the live window. The muxer deletes
# older ones otherwise; we keep every segment (ended streams stay watchable as VOD, the
# retention policy deletes whole stream folders). Not INT_MAX: the muxer computes
# ``nb_segments - window_size - extra_window_size`` in a C int.
KEEP_ALL_SEGMENTS = 1_000_000_000


def ffmpeg_binary() -> str:
    """``FFMPEG_BINARY`` if set (a path or a name on PATH), else imageio-ffmpeg's bundled one.

    The bundled build (ffmpeg 9 with libx264, libvpx, libopus and the hls/dash muxers)
    makes a fresh machine work without Debian's ffmpeg package.
    """
    configured = settings.FFMPEG_BINARY
    if configured:
        found = shutil.which(configured)
        if not found:
            raise ImproperlyConfigured(f"FFMPEG_BINARY={configured!r} is not an executable.")
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class EncoderOptions:
    """Everything about the encode that is not the ladder.

    The ``STREAM_*`` settings are its defaults (``from_settings``); the fields that have a
    default here are not settings.
    """

    segment_seconds: float
    fps: int
    x264_preset: str
    live_window_seconds: float  # 0: live playlists list every segment
    low_latency_input: bool  # -probesize 32 -analyzeduration 0
    webrtc_gop_seconds: float  # keyframe interval of the WebRTC (WHEP) output
    # -fflags nobuffer drops the packets read while probing: with a real MediaRecorder
    # stream that can be the first (and for seconds the only) VP8 keyframe, and FFmpeg then
    # exits ("Decode error rate 1 exceeds maximum"). Off; kept only to measure it.
    input_nobuffer: bool = False
    utc_timing_url: str | None = None  # for the MPD's UTCTiming (a later viewer feature)
    availability_start_ms: int | None = None  # anchor the MPD timeline to capture time
    # Low-latency mode: each segment is written progressively (``<segment>.m4s.tmp``), one
    # fragment (moof+mdat: an LL-HLS part, an LL-DASH chunk) per ``part_seconds``. None:
    # standard mode, one fragment per segment, the command exactly as before.
    part_seconds: float | None = None

    def __post_init__(self) -> None:
        if not 0.2 <= self.segment_seconds <= 10:
            raise ImproperlyConfigured(
                f"STREAM_SEGMENT_SECONDS={self.segment_seconds}: use 0.2..10 seconds."
            )
        if not 1 <= self.fps <= 60:
            raise ImproperlyConfigured(f"STREAM_FPS={self.fps}: use 1..60.")
        gop = self.fps * self.segment_seconds
        if abs(gop - round(gop)) > 1e-6:
            raise ImproperlyConfigured(
                f"STREAM_SEGMENT_SECONDS={self.segment_seconds} x STREAM_FPS={self.fps} must be "
                "a whole number of frames (every segment starts with a keyframe)."
            )
        if self.x264_preset not in X264_PRESETS:
            raise ImproperlyConfigured(
                f"STREAM_X264_PRESET={self.x264_preset!r}: one of {', '.join(X264_PRESETS)}."
            )
        if self.live_window_seconds < 0:
            raise ImproperlyConfigured("STREAM_LIVE_WINDOW_SECONDS must be >= 0.")
        if not 0.1 <= self.webrtc_gop_seconds <= 10:
            raise ImproperlyConfigured(
                f"STREAM_WHEP_GOP_SECONDS={self.webrtc_gop_seconds}: use 0.1..10 seconds."
            )
        if self.part_seconds is not None:
            part = self.part_seconds
            if not 0.05 <= part <= self.segment_seconds:
                raise ImproperlyConfigured(
                    f"STREAM_LL_PART_SECONDS={part}: use 0.05 s up to the segment's "
                    f"{self.segment_seconds} s."
                )
            frames = self.fps * part
            if abs(frames - round(frames)) > 1e-6:
                # The muxer cuts a fragment at the first frame at or after each part
                # boundary: a fraction of a frame would make parts of uneven length.
                raise ImproperlyConfigured(
                    f"STREAM_LL_PART_SECONDS={part} x STREAM_FPS={self.fps} must be a whole "
                    "number of frames."
                )

    @property
    def low_latency(self) -> LowLatency | None:
        """The folder's mode file content (``streaming.lowlatency``), None in standard mode."""
        if self.part_seconds is None:
            return None
        return LowLatency(part_target=self.part_seconds, segment_target=self.segment_seconds)

    @property
    def gop_frames(self) -> int:
        return round(self.fps * self.segment_seconds)

    @property
    def webrtc_gop_frames(self) -> int:
        return max(1, round(self.fps * self.webrtc_gop_seconds))

    @property
    def window_segments(self) -> int:
        """Segments listed in the live playlists (0: all). HLS wants >= 3 target durations."""
        if not self.live_window_seconds:
            return 0
        return max(4, math.ceil(self.live_window_seconds / self.segment_seconds))

    @classmethod
    def from_settings(cls, *, low_latency: bool = False, **overrides) -> EncoderOptions:
        """``low_latency``: a low-latency stream's options (``STREAM_LL_*`` segment and
        part), else standard mode's."""
        values = {
            "segment_seconds": settings.STREAM_SEGMENT_SECONDS,
            "fps": settings.STREAM_FPS,
            "x264_preset": settings.STREAM_X264_PRESET,
            "live_window_seconds": settings.STREAM_LIVE_WINDOW_SECONDS,
            "low_latency_input": settings.STREAM_LOW_LATENCY_INPUT,
            "webrtc_gop_seconds": settings.STREAM_WHEP_GOP_SECONDS,
        }
        if low_latency:
            values["segment_seconds"] = settings.STREAM_LL_SEGMENT_SECONDS
            values["part_seconds"] = settings.STREAM_LL_PART_SECONDS
        return cls(**{**values, **overrides})


@dataclass(frozen=True)
class ChildLimits:
    """What one FFmpeg child may take from the machine (``spawn`` applies it).

    ``memory_mb``: its address space (RLIMIT_AS; 0: unlimited), so a hostile or broken
    source makes that FFmpeg fail its allocations instead of the machine swapping.
    ``nice``: added to its CPU niceness, so encoders yield to the web process.
    ``oom_score_adj``: the kernel's OOM killer picks an FFmpeg before Daphne.
    """

    memory_mb: int
    nice: int
    oom_score_adj: int

    @classmethod
    def from_settings(cls) -> ChildLimits:
        return cls(
            memory_mb=settings.STREAM_FFMPEG_MEMORY_MB,
            nice=settings.STREAM_FFMPEG_NICE,
            oom_score_adj=settings.STREAM_FFMPEG_OOM_SCORE_ADJ,
        )

    def _apply_in_child(self) -> None:
        """Runs in the forked child just before exec, so FFmpeg and every thread it starts
        inherit it. Only three system calls: no imports, no locks (``preexec_fn`` runs in a
        copy of a threaded process)."""
        if self.memory_mb:
            limit = self.memory_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if self.nice:
            os.nice(self.nice)
        if self.oom_score_adj:
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            try:
                os.write(fd, self._oom_bytes)
            except PermissionError:
                pass  # below the server's own value (that needs privilege): keep the server's
            finally:
                os.close(fd)

    @property
    def _oom_bytes(self) -> bytes:
        return str(self.oom_score_adj).encode()


async def spawn(
    cmd: Sequence[str], limits: ChildLimits | None = None, **kwargs
) -> asyncio.subprocess.Process:
    """Start one FFmpeg child: the only place the site does (pipeline and face overlay).

    Always in a session of its own (a Ctrl-C aimed at the server does not kill FFmpeg
    before it finalises; if the server dies, FFmpeg sees EOF on stdin and exits), with
    ``limits`` (default: the settings) applied before exec. The caller must ``wait()`` for
    the returned process on every path (no zombies).
    """
    limits = limits or ChildLimits.from_settings()
    # glibc reserves 64 MiB of address space per malloc arena, up to 8 per core: that, not
    # memory used, made most of FFmpeg's address space (and scaled it with the machine's
    # cores). Two arenas: the limit measures what FFmpeg does.
    kwargs.setdefault("env", {**os.environ, "MALLOC_ARENA_MAX": "2"})
    return await asyncio.create_subprocess_exec(
        *cmd, start_new_session=True, preexec_fn=limits._apply_in_child, **kwargs
    )


@dataclass(frozen=True)
class RawInput:
    """Raw frames on stdin instead of WebM (the face overlay, ``streaming/overlay.py``).

    Video: ``pix_fmt`` frames of ``width`` x ``height`` at ``fps`` on ``pipe:0``. Audio (when
    the source has it): signed 16-bit PCM on the inherited descriptor ``audio_fd``.
    """

    width: int
    height: int
    fps: int
    pix_fmt: str = "yuv420p"
    audio_fd: int | None = None
    sample_rate: int = 48000
    channels: int = 2


X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
)


def audio_kbps_for(renditions: Sequence[Rendition]) -> int:
    """One AAC track serves every rung: the highest audio bitrate of the selected rungs."""
    return max(r.audio_kbps for r in renditions)


def _fmt_seconds(value: float) -> str:
    return f"{value:g}"


# The WebRTC (WHEP) output: one extra rendition every WebRTC viewer receives as is (the
# senders only packetise it: ``streaming/whep_feed.py``). At most this tall: WebRTC viewers
# get no ladder, and a 480p encode costs a fraction of a 720p one.
WEBRTC_MAX_HEIGHT = 480
# The container on the pipe to the server, and its options for the lowest delay from the
# encoder to PyAV's demuxer (measured: docs/decisions.md, "WHEP feed container"). NUT
# frames every packet with its length, so the demuxer hands a frame over as soon as its
# last byte arrives and keeps the encoder's Annex B bytes; MPEG-TS (its demuxer's H.264
# parser holds each frame until the next one starts) and Matroska (same, and length-
# prefixed H.264) were one frame later. The other two stay for the measurement.
WEBRTC_CONTAINER = "nut"
WEBRTC_CONTAINER_OPTIONS: dict[str, dict[str, object]] = {
    "nut": {"write_index": 0, "flush_packets": 1},
    "mpegts": {
        # Each video PES with its length, every Opus packet in a PES of its own.
        "muxdelay": 0,
        "muxpreload": 0,
        "omit_video_pes_length": 0,
        "pes_payload_size": 0,
        "flush_packets": 1,
    },
    "matroska": {"live": 1, "cluster_time_limit": 0, "flush_packets": 1},
}


def webrtc_rendition(renditions: Sequence[Rendition]) -> Rendition:
    """The WebRTC output's size and bitrates: the top rung's when it is at most 480p (it
    already fits the source), else 480p with the ladder table's bitrates."""
    top = renditions[0]
    if top.height <= WEBRTC_MAX_HEIGHT:
        return dataclasses.replace(top, name="webrtc")
    video_kbps, audio_kbps = default_bitrates(WEBRTC_MAX_HEIGHT)
    return Rendition("webrtc", WEBRTC_MAX_HEIGHT, video_kbps, audio_kbps)


def _webrtc_output(video, audio, fd: int, rung: Rendition, options: EncoderOptions, container: str):
    """H.264 constrained baseline (no B-frames: WebRTC receivers decode in order) with
    SPS/PPS repeated at every keyframe in Annex B, as aiortc's packetiser needs; a short
    fixed GOP so a new viewer waits at most ``webrtc_gop_seconds`` for its first picture;
    Opus at 48 kHz stereo in 20 ms frames, WebRTC's own audio."""
    gop = options.webrtc_gop_frames
    out: dict[str, object] = {
        "c:v": "libx264",
        "preset": options.x264_preset,
        "tune": "zerolatency",
        "profile:v": "baseline",
        "level:v": "3.1",
        "g": gop,
        "keyint_min": gop,
        "sc_threshold": 0,
        "bf": 0,
        "b:v": f"{rung.video_kbps}k",
        "maxrate:v": f"{round(rung.video_kbps * 1.2)}k",
        # Half a second of VBV: frame sizes stay even, so no frame takes long on the wire.
        "bufsize:v": f"{round(rung.video_kbps / 2)}k",
        # In-band SPS/PPS at every keyframe even where the container asks for global
        # headers: a viewer's first keyframe carries what its decoder needs.
        "x264-params": "repeat-headers=1",
        "format": container,
        **WEBRTC_CONTAINER_OPTIONS[container],
    }
    streams = [video]
    if audio is not None:
        streams.append(audio)
        out.update(
            {
                "c:a": "libopus",
                "b:a": f"{min(rung.audio_kbps, 128)}k",
                "ar": 48000,
                "ac": 2,
                "application": "lowdelay",
                "frame_duration": 20,
            }
        )
    return ffmpeg.output(*streams, f"pipe:{fd}", **out)


def build_command(
    output_dir: Path | str,
    renditions: Sequence[Rendition],
    *,
    has_audio: bool = True,
    options: EncoderOptions | None = None,
    binary: str | None = None,
    loglevel: str = "warning",
    raw_input: RawInput | None = None,
    webrtc_fd: int | None = None,
    webrtc_container: str = WEBRTC_CONTAINER,
) -> list[str]:
    """The argument list (binary first) for one live stream into ``output_dir``.

    Output stream order: video rung 0..n-1 (highest first), then audio (index n); the dash
    muxer names files after these indices (``media_0.m3u8``, ``init-stream0.m4s`` ...).

    ``webrtc_fd``: also write the WebRTC rendition (``webrtc_rendition``: H.264 + Opus, in
    ``webrtc_container``) to this inherited descriptor, from the same decode (the caller
    passes it to the child with ``pass_fds``). ``webrtc_container`` is only for measuring.
    """
    if not renditions:
        raise ValueError("at least one rendition is needed")
    options = options or EncoderOptions.from_settings()
    seg = options.segment_seconds
    input_kwargs: dict[str, object] = {"f": "webm"}
    if options.low_latency_input:
        # Start decoding from the first bytes instead of probing ~5 s of input first.
        input_kwargs.update(probesize=32, analyzeduration=0)
    if options.input_nobuffer:
        input_kwargs["fflags"] = "nobuffer"
    if options.part_seconds is not None:
        # The VP8 decoder's frame threads (one per core + 1) hold frames back: ~100 ms of
        # a low-latency stream's budget on 2 cores (docs/decisions.md). Slice threads stay.
        input_kwargs["flags"] = "low_delay"
    source = ffmpeg.input("pipe:0", **input_kwargs)
    audio_source = source
    if raw_input is not None:
        raw = raw_input
        source = ffmpeg.input(
            "pipe:0",
            f="rawvideo",
            pix_fmt=raw.pix_fmt,
            s=f"{raw.width}x{raw.height}",
            framerate=raw.fps,
        )
        if has_audio:
            audio_source = ffmpeg.input(
                f"pipe:{raw.audio_fd}",
                f="s16le",
                ar=raw.sample_rate,
                ac=raw.channels,
                thread_queue_size=1024,
            )

    video = source.video
    if raw_input is not None:
        # Raw frames carry no sample aspect ratio. With none, scale cannot keep the display
        # aspect ratio where ``-2`` rounds a rung's width (638x478 → 480x360 is not 4:3
        # exactly), and the dash muxer refuses rungs whose aspect ratios differ. Square
        # pixels (what the decoder was told to output) let scale set each rung's SAR.
        video = video.filter("setsar", 1)
    video = video.filter("fps", fps=options.fps)
    webrtc = webrtc_fd is not None
    branch_count = len(renditions) + webrtc
    if branch_count > 1:
        split = video.filter_multi_output("split", branch_count)
        branches = [split.stream(i) for i in range(branch_count)]
    else:
        branches = [video]
    webrtc_video = webrtc_audio = None
    if webrtc:
        webrtc_rung = webrtc_rendition(renditions)
        webrtc_video = (
            branches.pop().filter("scale", -2, webrtc_rung.height).filter("format", "yuv420p")
        )
    scaled = [
        branch.filter("scale", -2, rung.height).filter("format", "yuv420p")
        for branch, rung in zip(branches, renditions, strict=True)
    ]
    streams = list(scaled)
    if has_audio:
        # Fill timestamp gaps (a skipped chunk) with silence so audio and video stay aligned.
        audio = audio_source.audio.filter("aresample", **{"async": 1})
        if webrtc:
            audio_split = audio.filter_multi_output("asplit", 2)
            audio, webrtc_audio = audio_split.stream(0), audio_split.stream(1)
        streams.append(audio)

    out: dict[str, object] = {
        "c:v": "libx264",
        "preset": options.x264_preset,
        "tune": "zerolatency",
        "profile:v": "main",
        "g": options.gop_frames,
        "keyint_min": options.gop_frames,
        "sc_threshold": 0,
        "force_key_frames": f"expr:gte(t,n_forced*{_fmt_seconds(seg)})",
        "format": "dash",
        "dash_segment_type": "mp4",
        "seg_duration": _fmt_seconds(seg),
        "use_template": 1,
        "use_timeline": 1,
        "init_seg_name": INIT_SEG_NAME,
        "media_seg_name": MEDIA_SEG_NAME,
        "window_size": options.window_segments,
        "extra_window_size": KEEP_ALL_SEGMENTS,
        "remove_at_exit": 0,
        "hls_playlist": 1,
        "hls_master_name": HLS_MASTER_NAME,
        "adaptation_sets": "id=0,streams=v id=1,streams=a" if has_audio else "id=0,streams=v",
    }
    for index, rung in enumerate(renditions):
        out[f"b:v:{index}"] = f"{rung.video_kbps}k"
        out[f"maxrate:v:{index}"] = f"{round(rung.video_kbps * 1.2)}k"
        out[f"bufsize:v:{index}"] = f"{rung.video_kbps}k"
    if has_audio:
        out.update({"c:a": "aac", "b:a": f"{audio_kbps_for(renditions)}k"})
    if options.utc_timing_url:
        out["utc_timing_url"] = options.utc_timing_url
    if options.availability_start_ms is not None:
        out["availability_start_time_ms"] = options.availability_start_ms
    if options.part_seconds is not None:
        # Each fragment is written (and flushed) as soon as its frames are encoded, into
        # ``<segment>.m4s.tmp``, renamed when the segment closes: the origin serves parts
        # from the growing file (docs/decisions.md, "Low-latency encoder").
        out.update(
            {
                "streaming": 1,
                "frag_type": "duration",
                "frag_duration": _fmt_seconds(options.part_seconds),
            }
        )

    manifest = str(Path(output_dir) / MANIFEST_NAME)
    node = ffmpeg.output(*streams, manifest, **out)
    if webrtc:
        node = ffmpeg.merge_outputs(
            node,
            _webrtc_output(
                webrtc_video, webrtc_audio, webrtc_fd, webrtc_rung, options, webrtc_container
            ),
        )
    args = ffmpeg.get_args(node)
    # Global options first: ffmpeg-python's global_args() appends them after the output
    # file, where FFmpeg warns that trailing options may be ignored. -max_error_rate 1:
    # undecodable frames (e.g. after a skipped gap, until the next keyframe) must not turn
    # a finished stream into exit code 69; the stream's health is judged by the pipeline.
    return [
        binary or ffmpeg_binary(),
        *("-hide_banner", "-nostats", "-nostdin", "-y", "-loglevel", loglevel),
        *("-max_error_rate", "1"),
        *args,
    ]
