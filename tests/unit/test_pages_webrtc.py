"""The pages' WebRTC parts rendered (issue 17): the viewer's playback choice with WebRTC, the
publisher's ingest choice and its status labels, the icon."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from streaming.services import create_stream
from tests.unit.test_viewer_modes import ALICE, low_latency_stream

pytestmark = pytest.mark.django_db


def get(path: str) -> tuple[int, str]:
    response = Client().get(path)
    return response.status_code, response.content.decode()


def test_the_webrtc_viewer_page_is_one_choice_among_the_players():
    stream = low_latency_stream()
    status, html = get(f"/streams/{stream.slug}/webrtc/")
    assert status == 200
    assert 'data-player="webrtc"' in html
    assert f'data-whep-url="/streams/{stream.slug}/whep/"' in html
    assert 'aria-current="true" data-testid="play-webrtc"' in html
    for player in ("hls", "dash"):
        for mode in ("standard", "low"):
            path = f"/streams/{stream.slug}/{player}/?latency={mode}"
            assert f'href="{path}" data-testid="play-{player}-{mode}"' in html
    assert "capture, upload" not in html  # said by the page's script, with the figure
    assert "is not in this figure" in html  # what the readout leaves out
    # From an HLS page, WebRTC is a link with its cost.
    status, html = get(f"/streams/{stream.slug}/hls/")
    assert f'href="/streams/{stream.slug}/webrtc/" data-testid="play-webrtc"' in html
    assert "0.3-0.5 s from a WHIP publisher" in html and "no rewind" in html


def test_webrtc_playback_switched_off_is_shown_unavailable(settings):
    settings.STREAM_WHEP = False
    stream, _ = create_stream("Plain show", ALICE)
    status, html = get(f"/streams/{stream.slug}/dash/")
    assert status == 200
    assert 'aria-disabled="true" data-testid="play-webrtc"' in html
    assert "switched off" in html
    assert 'data-testid="watch-webrtc"' not in get(f"/streams/{stream.slug}/")[1]


def test_the_publisher_page_offers_three_ingests_and_knows_the_status_labels():
    stream, _ = create_stream("Plain show", ALICE)
    status, html = get(f"/streams/{stream.slug}/publish/")
    assert status == 200
    for kind in ("http", "ws", "whip"):
        assert f'value="{kind}" data-testid="transport-{kind}"' in html
    assert f'data-whip-url="/streams/{stream.slug}/whip/"' in html
    assert f"http://testserver/streams/{stream.slug}/whip/" in html  # for OBS and FFmpeg
    labels = json.loads(re.search(r'id="status-labels"[^>]*>(.*?)</script>', html).group(1))
    assert labels["idle"] == "Idle (waiting for the publisher)" and labels["live"] == "Live"
    assert "{#" not in html and "{% comment" not in html


def test_the_icon_is_there_for_pages_that_do_not_link_it():
    response = Client().get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("/favicon.ico")
    assert response["Location"].startswith("/static/")
