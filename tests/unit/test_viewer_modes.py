"""The viewer page's latency mode (``?latency=low|standard``) and the "Low latency" badges.

A stream is low-latency when its folder has the mode file (``low-latency.json``, written by
the pipeline) or, before it streams, when ``Stream.low_latency`` says so; low asked of a
standard stream plays standard with a note; anything else asked is a 400.
"""

from __future__ import annotations

import pytest
from django.template.loader import render_to_string
from django.test import Client

from identity.services import Identity
from streaming.lowlatency import LowLatency, write_mode
from streaming.services import create_stream

pytestmark = pytest.mark.django_db
ALICE = Identity(id="a" * 16, name="alice")


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STREAM_LOW_LATENCY_DEFAULT = False  # new streams standard unless a test says
    return settings.MEDIA_ROOT


def page(path: str) -> tuple[int, str]:
    response = Client().get(path)
    return response.status_code, response.content.decode()


def low_latency_stream(title: str = "Fast show"):
    stream, _ = create_stream(title, ALICE)
    write_mode(stream.media_dir(), LowLatency(part_target=0.2, segment_target=1.0))
    return stream


@pytest.mark.parametrize("player", ["hls", "dash"])
def test_a_standard_stream_plays_standard_and_low_falls_back_with_a_note(player, settings):
    stream, _ = create_stream("Plain show", ALICE)
    status, html = page(f"/streams/{stream.slug}/{player}/")
    assert status == 200
    assert 'data-latency-mode="standard"' in html and 'data-low-latency="false"' in html
    assert f'data-segment-seconds="{settings.STREAM_SEGMENT_SECONDS:g}"' in html
    assert 'data-testid="latency-fallback"' not in html
    # The low choice is shown, but not offered: not a link.
    assert 'aria-disabled="true" data-testid="latency-choice-low"' in html
    assert "offers standard mode only" in html

    status, html = page(f"/streams/{stream.slug}/{player}/?latency=low")
    assert status == 200
    assert 'data-latency-mode="standard"' in html
    assert 'data-testid="latency-fallback"' in html and "does not offer low latency" in html


@pytest.mark.parametrize("player", ["hls", "dash"])
def test_a_low_latency_stream_opens_low_and_switches_to_standard(player):
    stream = low_latency_stream()
    status, html = page(f"/streams/{stream.slug}/{player}/")
    assert status == 200
    assert 'data-latency-mode="low"' in html and 'data-low-latency="true"' in html
    assert 'data-part-target="0.2"' in html and 'data-segment-seconds="1.0"' in html
    assert 'aria-current="true" data-testid="latency-choice-low"' in html
    assert 'href="?latency=standard" data-testid="latency-choice-standard"' in html
    assert "a weak connection stalls sooner" in html  # what each mode costs
    assert "{#" not in html and "comment" not in html

    status, html = page(f"/streams/{stream.slug}/{player}/?latency=standard")
    assert status == 200
    assert 'data-latency-mode="standard"' in html and 'data-low-latency="true"' in html
    assert 'href="?latency=low" data-testid="latency-choice-low"' in html
    other = "dash" if player == "hls" else "hls"
    assert f'href="/streams/{stream.slug}/{other}/?latency=standard"' in html  # the mode kept
    assert 'data-testid="latency-fallback"' not in html


@pytest.mark.parametrize("value", ["fast", "", "LOW", "low%00", "x" * 5000])
def test_an_unknown_latency_mode_is_a_400_that_says_which_are_known(value):
    stream = low_latency_stream()
    response = Client().get(f"/streams/{stream.slug}/hls/", {"latency": value})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert b"low or standard" in response.content


def test_a_low_latency_stream_not_yet_streaming_is_known_by_its_model_field(settings):
    """Before its folder has the mode file: ``Stream.low_latency`` and the settings' targets."""
    from streaming import views

    stream, _ = create_stream("Soon fast", ALICE)
    assert views.offered_low_latency(stream) is None
    stream.low_latency = True  # the model field (set at creation once it exists)
    mode = views.offered_low_latency(stream)
    assert mode == LowLatency(settings.STREAM_LL_PART_SECONDS, settings.STREAM_LL_SEGMENT_SECONDS)


def test_the_detail_page_says_whether_the_stream_offers_low_latency():
    plain, _ = create_stream("Plain show", ALICE)
    status, html = page(f"/streams/{plain.slug}/")
    assert status == 200
    assert 'data-testid="standard-only"' in html and 'data-testid="low-latency-offered"' not in html
    fast = low_latency_stream()
    status, html = page(f"/streams/{fast.slug}/")
    assert status == 200
    assert 'data-testid="low-latency-offered"' in html and "Low latency</span>" in html


@pytest.mark.parametrize("lobby", [True, False])
def test_stream_cards_carry_a_low_latency_badge(lobby):
    stream, _ = create_stream("Card show", ALICE)
    html = render_to_string("streaming/_stream_card.html", {"stream": stream, "lobby": lobby})
    assert f'data-testid="low-latency-{stream.slug}"' not in html
    stream.low_latency = True  # the model field (Stream.low_latency)
    html = render_to_string("streaming/_stream_card.html", {"stream": stream, "lobby": lobby})
    assert f'data-testid="low-latency-{stream.slug}"' in html and ">Low latency<" in html
