"""Bitrate ladder parsing/selection, the FFmpeg command, and playlist helpers (no FFmpeg run)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from streaming.ffmpeg import EncoderOptions, build_command
from streaming.ladder import (
    Rendition,
    configured_ladder,
    parse_ladder,
    renditions_for_source,
)
from streaming.playlists import fix_target_duration, hls_target_duration


def heights(rungs) -> list[int]:
    return [r.height for r in rungs]


def test_default_ladder_is_720_and_360():
    ladder = configured_ladder()  # STREAM_LADDER's default
    assert ladder == (Rendition("720p", 720, 2500, 128), Rendition("360p", 360, 800, 96))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("360,720", [(720, 2500, 128), (360, 800, 96)]),  # sorted, highest first
        ("720p, 480p", [(720, 2500, 128), (480, 1200, 128)]),
        ("1080:5000:192,540:1500", [(1080, 5000, 192), (540, 1500, 128)]),
        (
            '[{"height": 720, "video_kbps": 3000}, {"height": 360, "audio_kbps": 64}]',
            [(720, 3000, 128), (360, 800, 64)],
        ),
        ('{"height": 480}', [(480, 1200, 128)]),
        ([720, {"height": 240, "name": "low"}], [(720, 2500, 128), (240, 400, 64)]),
        ("600", [(600, round(1600 * (600 / 540) ** 2), 128)]),  # nearest row (540), by area
    ],
)
def test_ladder_formats(value, expected):
    ladder = parse_ladder(value)
    assert [(r.height, r.video_kbps, r.audio_kbps) for r in ladder] == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("720,,360", "empty rung"),
        ("721", "even number"),
        ("720,720", "duplicate heights"),
        ("abc", "must be an integer"),
        ("720:2500:128:1", "height\\[:video_kbps"),
        ("720:10", "video_kbps 10"),
        ("720:2500:2000", "audio_kbps 2000"),
        ("9000", "between"),
        ("[{", "not valid JSON"),
        ('[{"height": 720, "fps": 60}]', "unknown keys"),
        ('[{"video_kbps": 100}]', "no 'height'"),
        ('[{"height": 720, "name": "a/b"}]', "name"),
        ("[]", "empty"),
        (42, "must be text"),
    ],
)
def test_ladder_validation_errors_are_clear(value, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_ladder(value)


def test_configured_ladder_reads_the_setting(settings):
    assert heights(configured_ladder()) == [720, 360]  # no STREAM_LADDER: the default
    settings.STREAM_LADDER = "1080,720,360"
    assert heights(configured_ladder()) == [1080, 720, 360]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (1080, [720, 360]),  # downscaled only
        (720, [720, 360]),
        (480, [480, 360]),  # the 720 rung would upscale: the source height replaces it
        (481, [480, 360]),  # odd heights round down to even
        (360, [360]),
        (240, [240]),  # smaller than every rung: one rung at the source height
        (None, [720, 360]),  # unknown: the ladder as is
    ],
)
def test_renditions_never_upscale(source, expected):
    chosen = renditions_for_source(parse_ladder("720,360"), source)
    assert heights(chosen) == expected
    if source:
        assert all(r.height <= source for r in chosen)


def test_source_rung_bitrate_is_scaled_by_area():
    chosen = renditions_for_source(parse_ladder("720:2500:128,360:800:96"), 480)
    assert chosen[0] == Rendition("480p", 480, round(2500 * (480 / 720) ** 2), 128)


# --- the FFmpeg command --------------------------------------------------------------------
def arg(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_command_one_decode_split_scale_and_dash_with_hls(tmp_path):
    rungs = parse_ladder("720,360")
    options = EncoderOptions.from_settings(segment_seconds=1.0, live_window_seconds=10.0)
    cmd = build_command(tmp_path, rungs, options=options, binary="ffmpeg")
    assert cmd[0] == "ffmpeg"
    # Global options before the input; low-latency input probing; stdin WebM.
    assert cmd.index("-max_error_rate") < cmd.index("-i")
    assert arg(cmd, "-probesize") == "32" and arg(cmd, "-analyzeduration") == "0"
    assert "-fflags" not in cmd
    assert arg(cmd, "-f") == "webm" and arg(cmd, "-i") == "pipe:0"
    graph = arg(cmd, "-filter_complex")
    assert "fps=fps=30" in graph and "split=2" in graph
    assert "scale=-2:720" in graph and "scale=-2:360" in graph
    assert "aresample=async=1" in graph
    assert cmd.count("-map") == 3
    # Encoders: per-rung bitrates, zero-latency x264, a keyframe at every segment start.
    assert arg(cmd, "-c:v") == "libx264" and arg(cmd, "-tune") == "zerolatency"
    assert arg(cmd, "-b:v:0") == "2500k" and arg(cmd, "-b:v:1") == "800k"
    assert arg(cmd, "-g") == "30" and arg(cmd, "-keyint_min") == "30"
    assert arg(cmd, "-sc_threshold") == "0"
    assert arg(cmd, "-force_key_frames") == "expr:gte(t,n_forced*1)"
    assert arg(cmd, "-c:a") == "aac" and arg(cmd, "-b:a") == "128k"
    # The dash muxer writes both DASH and HLS; a live window, but every segment kept.
    assert cmd[cmd.index("-f", cmd.index("-i")) + 1] == "dash"
    assert arg(cmd, "-hls_playlist") == "1" and arg(cmd, "-seg_duration") == "1"
    assert arg(cmd, "-adaptation_sets") == "id=0,streams=v id=1,streams=a"
    assert arg(cmd, "-window_size") == "10"
    assert int(arg(cmd, "-extra_window_size")) >= 1_000_000
    assert arg(cmd, "-remove_at_exit") == "0"
    assert cmd[-1] == str(tmp_path / "manifest.mpd")


def test_command_without_audio_and_with_half_second_segments(tmp_path):
    options = EncoderOptions.from_settings(segment_seconds=0.5, fps=30, live_window_seconds=0)
    cmd = build_command(tmp_path, parse_ladder("360"), has_audio=False, options=options)
    assert "split" not in arg(cmd, "-filter_complex")
    assert "-c:a" not in cmd and cmd.count("-map") == 1
    assert arg(cmd, "-adaptation_sets") == "id=0,streams=v"
    assert arg(cmd, "-g") == "15" and arg(cmd, "-seg_duration") == "0.5"
    assert arg(cmd, "-force_key_frames") == "expr:gte(t,n_forced*0.5)"
    assert arg(cmd, "-window_size") == "0"  # 0: live playlists list every segment


def test_optional_dash_timing_options(tmp_path):
    options = EncoderOptions.from_settings(
        utc_timing_url="https://x/utc", availability_start_ms=1_700_000_000
    )
    cmd = build_command(tmp_path, parse_ladder("360"), options=options, binary="ffmpeg")
    assert arg(cmd, "-utc_timing_url") == "https://x/utc"
    assert arg(cmd, "-availability_start_time_ms") == "1700000000"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"segment_seconds": 0.1}, "STREAM_SEGMENT_SECONDS"),
        ({"segment_seconds": 0.35, "fps": 30}, "whole number of frames"),
        ({"fps": 0}, "STREAM_FPS"),
        ({"x264_preset": "placebo"}, "STREAM_X264_PRESET"),
        ({"live_window_seconds": -1}, "LIVE_WINDOW"),
    ],
)
def test_encoder_option_validation(kwargs, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        EncoderOptions.from_settings(**kwargs)


def test_encoder_options_from_settings(settings):
    settings.STREAM_SEGMENT_SECONDS = 2.0
    settings.STREAM_LIVE_WINDOW_SECONDS = 3
    options = EncoderOptions.from_settings()
    assert options.segment_seconds == 2.0 and options.gop_frames == 60
    assert options.window_segments == 4  # at least 4 segments listed (HLS: >= 3 targets)


# --- playlist helpers ----------------------------------------------------------------------
def test_target_duration_is_never_zero():
    assert hls_target_duration([0.5, 0.5, 0.49]) == 1
    assert hls_target_duration([1.0, 1.02, 0.98]) == 1
    assert hls_target_duration([2.0, 2.6]) == 3
    text = "#EXTM3U\n#EXT-X-TARGETDURATION:0\n#EXTINF:0.500000,\na.m4s\n"
    assert "#EXT-X-TARGETDURATION:1\n" in fix_target_duration(text)
    ok = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.000000,\na.m4s\n"
    assert fix_target_duration(ok) == ok
