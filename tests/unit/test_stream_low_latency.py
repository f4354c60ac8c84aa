"""A stream's low-latency mode on the publishing side: the model's default, the create form,
the status JSON, the publisher forms' chunk, the admin, and the encoder options and command
in both modes (the real encode is in tests/integration/test_pipeline_low_latency.py)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from identity.services import Identity
from streaming.ffmpeg import EncoderOptions, build_command
from streaming.ladder import parse_ladder
from streaming.lowlatency import LowLatency, write_mode
from streaming.models import Stream
from streaming.overlay import RawInput, decoder_command
from streaming.services import create_stream

ALICE = Identity(id="a" * 16, name="alice")


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def arg(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


# --- the model and the forms -----------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("default", [True, False])
def test_new_streams_take_the_setting_when_created_not_when_migrated(settings, default):
    settings.STREAM_LOW_LATENCY_DEFAULT = default
    assert Stream(slug="a", title="A").low_latency is default
    stream, _ = create_stream("Show", ALICE)
    assert Stream.objects.get(pk=stream.pk).low_latency is default
    chosen, _ = create_stream("Show", ALICE, low_latency=not default)
    assert Stream.objects.get(pk=chosen.pk).low_latency is (not default)


@pytest.mark.django_db
@pytest.mark.parametrize("default", [True, False])
def test_create_form_offers_the_choice_checked_per_the_setting(settings, default):
    settings.STREAM_LOW_LATENCY_DEFAULT = default
    html = Client().get("/streams/").content.decode()
    box = re.search(r'<input type="checkbox" name="low_latency"[^>]*>', html).group(0)
    assert ("checked" in box) is default
    assert "Low latency (LL-HLS / LL-DASH, about 1 s)" in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"low_latency_shown": "1", "low_latency": "on"}, True),
        ({"low_latency_shown": "1"}, False),  # the box unchecked
        ({}, True),  # a script without the field: the setting (True here)
    ],
)
def test_create_form_post_sets_the_mode(settings, fields, expected):
    settings.STREAM_LOW_LATENCY_DEFAULT = True
    response = Client().post("/streams/new/", {"title": "Mode", **fields})
    assert response.status_code == 302
    assert Stream.objects.get(title="Mode").low_latency is expected


@pytest.mark.django_db
def test_status_json_says_the_mode_and_the_part_target(settings):
    settings.STREAM_LL_PART_SECONDS = 0.2
    client = Client()
    ll, _ = create_stream("LL", ALICE, low_latency=True)
    standard, _ = create_stream("Standard", ALICE, low_latency=False)
    body = client.get(f"/streams/{ll.slug}/status/").json()
    assert body["low_latency"] is True and body["part_target"] == 0.2
    body = client.get(f"/streams/{standard.slug}/status/").json()
    assert body["low_latency"] is False and "part_target" not in body
    # Once the encoder has started, the folder's mode file is what the origin serves.
    write_mode(ll.media_dir(), LowLatency(part_target=0.25, segment_target=1.0))
    assert client.get(f"/streams/{ll.slug}/status/").json()["part_target"] == 0.25


@pytest.mark.django_db
def test_publish_page_states_the_mode_and_starts_with_its_chunk(settings):
    settings.STREAM_LL_TIMESLICE_MS = 100
    client = Client()
    for low_latency, timeslice, words in ((True, 100, "low latency"), (False, 250, "standard")):
        stream, _ = create_stream("Pub", ALICE, low_latency=low_latency)
        html = client.get(stream.get_publish_url()).content.decode()
        mode = re.search(r'data-testid="stream-mode">(.*?)</p>', html, re.S).group(1)
        assert words in mode
        field = re.search(r'<input id="timeslice"[^>]*>', html).group(0)
        assert f'value="{timeslice}"' in field  # still a field: the publisher may change it
        assert f'data-low-latency="{int(low_latency)}"' in html
        # A low-latency stream starts on the WebSocket (100 ms chunks: no request per chunk).
        checked = re.findall(r'name="transport" value="(\w+)"[^>]*checked', html)
        assert checked == (["ws"] if low_latency else ["http"])


@pytest.mark.django_db
def test_faces_page_publishes_with_the_streams_chunk(settings):
    settings.STREAM_LL_TIMESLICE_MS = 100
    stream, _ = create_stream("Faces", ALICE, low_latency=True)
    html = Client().get(f"/faces/?stream={stream.slug}").content.decode()
    assert re.search(r'<input id="fp-timeslice"[^>]*value="100"', html)


def test_rate_limit_leaves_headroom_for_low_latency_chunks(settings):
    """``STREAM_RATE_LIMIT`` (chunks/s per stream) must take the LL publisher's chunks
    with room for catching up after a network hiccup."""
    from rtcsite import settings as defaults

    per_second = 1000 / defaults.STREAM_LL_TIMESLICE_MS
    assert 2 * per_second <= defaults.STREAM_RATE_LIMIT


@pytest.mark.django_db
def test_admin_lists_and_filters_by_mode():
    user = User.objects.create_superuser("root", "root@example.org", "pw")
    client = Client()
    client.force_login(user)
    create_stream("Fast one", ALICE, low_latency=True)
    create_stream("Slow one", ALICE, low_latency=False)
    html = client.get("/admin/streaming/stream/").content.decode()
    assert "?low_latency__exact=1" in html
    only = client.get("/admin/streaming/stream/?low_latency__exact=1").content.decode()
    assert "Fast one" in only and "Slow one" not in only


# --- encoder options and command ---------------------------------------------------------------
def test_low_latency_options_from_settings(settings):
    settings.STREAM_LL_SEGMENT_SECONDS = 1.0
    settings.STREAM_LL_PART_SECONDS = 0.2
    settings.STREAM_SEGMENT_SECONDS = 0.5
    ll = EncoderOptions.from_settings(low_latency=True)
    assert ll.segment_seconds == 1.0 and ll.part_seconds == 0.2 and ll.gop_frames == 30
    assert ll.low_latency == LowLatency(part_target=0.2, segment_target=1.0)
    standard = EncoderOptions.from_settings()
    assert standard.segment_seconds == 0.5 and standard.part_seconds is None
    assert standard.low_latency is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"part_seconds": 0.0}, "STREAM_LL_PART_SECONDS"),
        ({"part_seconds": 1.5}, "STREAM_LL_PART_SECONDS"),  # longer than the segment
        ({"part_seconds": 0.25}, "whole number of frames"),  # 7.5 frames at 30 fps
    ],
)
def test_low_latency_option_validation(kwargs, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        EncoderOptions.from_settings(segment_seconds=1.0, fps=30, **kwargs)


def test_part_of_a_whole_segment_is_allowed():
    assert EncoderOptions.from_settings(segment_seconds=1.0, part_seconds=1.0).part_seconds == 1


def test_low_latency_command_writes_fragments_progressively(tmp_path):
    options = EncoderOptions.from_settings(segment_seconds=1.0, part_seconds=0.2, fps=30)
    cmd = build_command(tmp_path, parse_ladder("720,360"), options=options, binary="ffmpeg")
    output = cmd[cmd.index("pipe:0") :]
    assert arg(output, "-streaming") == "1"
    assert arg(output, "-frag_type") == "duration" and arg(output, "-frag_duration") == "0.2"
    # One GOP per segment as in standard mode: every segment (its first part) independent.
    assert arg(cmd, "-seg_duration") == "1" and arg(cmd, "-g") == "30"
    assert arg(cmd, "-keyint_min") == "30"
    assert arg(cmd, "-force_key_frames") == "expr:gte(t,n_forced*1)"
    assert arg(cmd, "-use_timeline") == "1" and arg(cmd, "-hls_playlist") == "1"
    # The WebM decoder without frame threads (they hold frames back).
    assert arg(cmd, "-flags") == "low_delay" and cmd.index("-flags") < cmd.index("-i")
    assert "-ldash" not in cmd and "-lhls" not in cmd
    assert cmd[-1] == str(tmp_path / "manifest.mpd")


def test_standard_command_is_unchanged_by_the_mode(tmp_path):
    rungs = parse_ladder("720,360")
    standard = EncoderOptions.from_settings(segment_seconds=1.0)
    cmd = build_command(tmp_path, rungs, options=standard, binary="ffmpeg")
    for option in ("-streaming", "-frag_type", "-frag_duration", "-flags"):
        assert option not in cmd
    ll = EncoderOptions.from_settings(segment_seconds=1.0, part_seconds=0.2)
    ll_cmd = build_command(tmp_path, rungs, options=ll, binary="ffmpeg")
    extra = ["-flags", "low_delay", "-streaming", "1", "-frag_type", "duration"]
    assert sorted(ll_cmd) == sorted([*cmd, *extra, "-frag_duration", "0.2"])


def test_low_latency_overlay_decodes_without_frame_threads(tmp_path):
    options = EncoderOptions.from_settings(segment_seconds=1.0, part_seconds=0.2)
    raw = RawInput(640, 480, 30)
    cmd = build_command(tmp_path, parse_ladder("360"), options=options, raw_input=raw)
    assert "-flags" not in cmd  # raw frames: no decoder in FFmpeg #2
    assert arg(decoder_command("ffmpeg", raw, None, low_delay=True), "-flags") == "low_delay"
    assert "-flags" not in decoder_command("ffmpeg", raw, None)
