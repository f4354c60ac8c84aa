"""A failed stream's row: a short public reason, FFmpeg's detail for staff only.

The status endpoint, the stream page and the lobby never show ``failure_detail``; the
admin does (read-only). A stream that fails before it ever went live (a source the site
does not take) is recorded as failed, not left idle to be published again.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from identity.services import Identity
from streaming.models import Stream, StreamStatus
from streaming.pipeline import PipelineConfig, PipelineState, StreamClosed, StreamPipeline
from streaming.services import create_stream
from streaming.status import row_values
from tests.unit.test_webm_limits import element

pytestmark = pytest.mark.django_db
ALICE = Identity(id="a" * 16, name="alice")
DETAIL = (
    "FFmpeg exited with code 234 unexpectedly: [dash @ 0x55] Could not open "
    "'/srv/rtcsite/media/streams/show/manifest.mpd': No such file or directory"
)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def failed_stream() -> Stream:
    stream, _ = create_stream("Broken show", ALICE)
    Stream.objects.filter(pk=stream.pk).update(
        status=StreamStatus.FAILED, reason="encoder failed", failure_detail=DETAIL
    )
    stream.refresh_from_db()
    return stream


def test_public_status_page_and_lobby_show_the_reason_not_the_detail(failed_stream):
    client = Client()
    status = client.get(f"/streams/{failed_stream.slug}/status/").json()
    assert status["status"] == "failed" and status["reason"] == "encoder failed"
    assert "failure_detail" not in status
    page = client.get(f"/streams/{failed_stream.slug}/").content.decode()
    assert "encoder failed" in page
    lobby = client.get("/").content.decode()
    for text in (str(status), page, lobby):
        assert "/srv/rtcsite" not in text and "FFmpeg" not in text


def test_admin_shows_the_detail_read_only(failed_stream):
    staff = User.objects.create_superuser("root", "root@example.org", "pw")
    client = Client()
    client.force_login(staff)
    html = client.get(f"/admin/streaming/stream/{failed_stream.pk}/change/").content.decode()
    assert "/srv/rtcsite/media/streams/show/manifest.mpd" in html
    assert 'name="failure_detail"' not in html  # shown, not an editable field


def one_by_one_header() -> bytes:
    video = element(0xE0, element(0xB0, b"\x01") + element(0xBA, b"\x01"))
    fields = element(0xD7, b"\x01") + element(0x83, b"\x01") + element(0x86, b"V_VP8")
    tracks = element(0x1654AE6B, element(0xAE, fields + video))
    header = element(0x1A45DFA3, element(0x4282, b"webm"))
    return header + bytes.fromhex("18538067 01ffffffffffffff") + tracks


async def test_a_stream_failed_before_going_live_is_recorded_failed(tmp_path):
    pipeline = StreamPipeline(tmp_path / "s", PipelineConfig.from_settings(face_overlay=True))
    with pytest.raises(StreamClosed, match="unsupported video: 1x1 frame size"):
        await pipeline.feed(0, one_by_one_header())
    assert pipeline.state == PipelineState.FAILED and pipeline.started_at is None
    values = row_values(pipeline, stopped_by_publisher=False)
    assert values["status"] == StreamStatus.FAILED
    assert values["reason"] == "unsupported video: 1x1 frame size"
