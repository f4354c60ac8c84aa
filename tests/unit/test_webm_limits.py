"""What source a stream takes (``webm.check_source``), without FFmpeg.

A WebM header may claim any frame size and codec; the site takes 16..4096 pixels a side,
at most 4096x2160 pixels in all, browser codecs only. Anything else is an
``UnsupportedSource`` with a short public reason, raised before anything is sized from it.
"""

from __future__ import annotations

import pytest

from streaming.overlay import OverlayPlan, _read_exact
from streaming.webm import (
    StreamInfo,
    Track,
    UnsupportedSource,
    WebMError,
    WebMStreamChecker,
    check_source,
    parse_tracks,
)

LIMITS = {"max_side": 4096, "max_pixels": 4096 * 2160}


def info(width, height, video="V_VP8", audio: str | None = "A_OPUS") -> StreamInfo:
    tracks = [Track(1, "video", video, width, height)]
    if audio is not None:
        tracks.append(Track(2, "audio", audio, sample_rate=48000.0, channels=2))
    return StreamInfo("webm", tuple(tracks))


@pytest.mark.parametrize(
    "width,height",
    [(16, 16), (640, 480), (639, 479), (1366, 768), (4096, 2160), (2160, 4096), (4096, 16)],
)
def test_sizes_within_the_limits_are_taken(width, height):
    check_source(info(width, height), **LIMITS)


@pytest.mark.parametrize(
    "width,height",
    [
        (1, 1),
        (0, 0),
        (None, None),  # no PixelWidth/PixelHeight at all
        (15, 480),
        (640, 15),
        (65535, 65535),
        (4097, 16),
        (4096, 4096),  # each side allowed, the area is not
        (2**64 - 1, 2**64 - 1),
    ],
)
def test_sizes_outside_the_limits_are_refused_with_a_public_reason(width, height):
    with pytest.raises(UnsupportedSource) as refused:
        check_source(info(width, height), **LIMITS)
    assert refused.value.reason == f"unsupported video: {width or 0}x{height or 0} frame size"


def test_the_limits_are_parameters():
    check_source(info(1920, 1080), max_side=1920, max_pixels=1920 * 1080)
    with pytest.raises(UnsupportedSource):
        check_source(info(1920, 1080), max_side=1280, max_pixels=4096 * 2160)
    with pytest.raises(UnsupportedSource):
        check_source(info(1920, 1080), max_side=4096, max_pixels=1280 * 720)


@pytest.mark.parametrize("codec", ["V_VP8", "V_VP9", "V_AV1", "V_MPEG4/ISO/AVC"])
def test_browser_video_codecs_are_taken(codec):
    check_source(info(640, 480, video=codec), **LIMITS)


@pytest.mark.parametrize(
    "codec", ["A_OPUS", "A_VORBIS", "A_AAC", "A_AAC/MPEG4/LC", "A_PCM/INT/LIT", "A_PCM/FLOAT/IEEE"]
)
def test_browser_audio_codecs_are_taken(codec):
    check_source(info(640, 480, audio=codec), **LIMITS)
    check_source(info(640, 480, audio=None), **LIMITS)  # video only is fine


@pytest.mark.parametrize(
    "video,audio,reason",
    [
        ("V_MPEGH/ISO/HEVC", "A_OPUS", "unsupported video: codec V_MPEGH/ISO/HEVC"),
        ("V_THEORA", "A_OPUS", "unsupported video: codec V_THEORA"),
        ("", "A_OPUS", "unsupported video: codec none"),
        ("V_\x00<script>" + "x" * 100, "A_OPUS", "unsupported video: codec V_?<script>" + "x" * 21),
        ("V_VP8", "A_MPEG/L3", "unsupported audio: codec A_MPEG/L3"),
        ("V_VP8", "A_AACX", "unsupported audio: codec A_AACX"),
    ],
)
def test_other_codecs_are_refused_with_a_bounded_printable_reason(video, audio, reason):
    with pytest.raises(UnsupportedSource) as refused:
        check_source(info(640, 480, video=video, audio=audio), **LIMITS)
    assert refused.value.reason == reason


# --- the header parser never builds a size it cannot print ---------------------------------
def element(ident: int, payload: bytes) -> bytes:
    """An EBML element with an 8-byte size field (enough for these tests)."""
    id_bytes = ident.to_bytes((ident.bit_length() + 7) // 8, "big")
    return id_bytes + (0x01 << 56 | len(payload)).to_bytes(8, "big") + payload


def test_a_size_element_longer_than_8_bytes_is_refused_as_not_webm():
    video = element(0xE0, element(0xB0, b"\xff" * 4096) + element(0xBA, b"\x01\xe0"))
    entry = element(0xAE, element(0xD7, b"\x01") + element(0x83, b"\x01") + video)
    with pytest.raises(WebMError, match="at most 8"):
        parse_tracks(entry)


def test_the_checker_reads_a_lying_header_as_it_is():
    """The structure checker does not judge sizes (that is check_source's job): a 1x1
    header is still a WebM stream."""
    video = element(0xE0, element(0xB0, b"\x01") + element(0xBA, b"\x01"))
    fields = element(0xD7, b"\x01") + element(0x83, b"\x01") + element(0x86, b"V_VP8")
    tracks = element(0x1654AE6B, element(0xAE, fields + video))
    header = element(0x1A45DFA3, element(0x4282, b"webm"))
    segment = bytes.fromhex("18538067 01ffffffffffffff")  # unknown size, as MediaRecorder
    checker = WebMStreamChecker()
    checker.check(header + segment + tracks)
    assert checker.info is not None
    assert (checker.info.video.width, checker.info.video.height) == (1, 1)
    with pytest.raises(UnsupportedSource, match="1x1 frame size"):
        check_source(checker.info, **LIMITS)


# --- the overlay never sizes a buffer of 0 bytes ------------------------------------------
def test_overlay_refuses_a_frame_size_that_rounds_to_zero():
    with pytest.raises(ValueError, match="too small"):
        OverlayPlan.for_source(1, 1, 30, has_audio=False)


def test_overlay_rounds_odd_sizes_down_to_even():
    plan = OverlayPlan.for_source(639, 479, 30, has_audio=False)
    assert (plan.raw.width, plan.raw.height) == (638, 478)


def test_reading_a_frame_into_an_empty_buffer_is_an_error_not_an_endless_success():
    import os

    read, write = os.pipe()
    try:
        with pytest.raises(ValueError):
            _read_exact(read, bytearray())
    finally:
        os.close(read)
        os.close(write)
