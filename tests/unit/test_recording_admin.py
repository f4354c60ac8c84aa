"""Recordings in Django admin: listed, downloadable by staff, not by visitors."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from signaling.models import Recording

pytestmark = pytest.mark.django_db


@pytest.fixture
def recording(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "echo-1.webm").write_bytes(b"\x1a\x45\xdf\xa3webm")
    return Recording.objects.create(
        room_slug="echo-1",
        room_kind="echo",
        participant="Ada",
        user_id="00000000000000aa",
        file="recordings/echo-1.webm",
        status=Recording.Status.DONE,
        duration_s=12.5,
        size_bytes=8,
    )


def test_listed_and_downloadable_by_staff(client, recording):
    admin = get_user_model().objects.create_superuser("root", "root@example.org", "pw")
    client.force_login(admin)
    page = client.get(reverse("admin:signaling_recording_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "echo-1" in text and "Ada" in text and "12.5 s" in text
    download = client.get(reverse("admin:signaling_recording_download", args=[recording.pk]))
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b"\x1a\x45\xdf\xa3webm"
    assert download["Content-Type"] == "video/webm"


def test_visitors_cannot_download(client, recording):
    url = reverse("admin:signaling_recording_download", args=[recording.pk])
    response = client.get(url)
    assert response.status_code == 302 and "/login/" in response["Location"]
