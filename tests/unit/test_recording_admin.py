"""Recordings in Django admin, and the one view that hands their files out: staff only
(issue 14.9), from RECORDINGS_ROOT, never through a public media URL."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import SuspiciousFileOperation
from django.http import Http404
from django.test import RequestFactory
from django.urls import reverse
from django.views.static import serve

from signaling.models import Recording

pytestmark = pytest.mark.django_db

NAME = "Zq3x-Y8kP0aW1vB2nC4dE5fG6hJ7kL9m.webm"
BODY = b"\x1a\x45\xdf\xa3webm"


@pytest.fixture
def recording(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.RECORDINGS_ROOT = tmp_path / "recordings"
    settings.RECORDINGS_X_ACCEL_PREFIX = ""
    (tmp_path / "media").mkdir()
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / NAME).write_bytes(BODY)
    return Recording.objects.create(
        room_slug="echo-1",
        room_kind="echo",
        participant="Ada",
        user_id="00000000000000aa",
        file=NAME,
        status=Recording.Status.DONE,
        duration_s=12.5,
        size_bytes=8,
    )


def user(name: str, *, staff: bool, perm: bool = False, superuser: bool = False):
    model = get_user_model()
    if superuser:
        return model.objects.create_superuser(name, f"{name}@example.org", "pw")
    made = model.objects.create_user(name, f"{name}@example.org", "pw", is_staff=staff)
    if perm:
        made.user_permissions.add(Permission.objects.get(codename="view_recording"))
    return made


def file_url(recording) -> str:
    return reverse("signaling:recording-file", args=[recording.pk])


def test_listed_in_admin_with_a_link_to_the_staff_view(client, recording):
    client.force_login(user("root", staff=True, superuser=True))
    page = client.get(reverse("admin:signaling_recording_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "echo-1" in text and "Ada" in text and "12.5 s" in text
    assert f'href="{file_url(recording)}"' in text


@pytest.mark.parametrize("who", ["superuser", "staff with the view permission"])
def test_staff_get_the_bytes(client, recording, who):
    if who == "superuser":
        client.force_login(user("root", staff=True, superuser=True))
    else:
        client.force_login(user("mod", staff=True, perm=True))
    response = client.get(file_url(recording))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == BODY
    assert response["Content-Type"] == "video/webm"
    assert response["Content-Disposition"].startswith("attachment;")


@pytest.mark.parametrize(
    "who", ["anonymous", "visitor with an account", "staff without the permission"]
)
def test_everyone_else_gets_404(client, recording, who):
    if who == "visitor with an account":
        client.force_login(user("bob", staff=False, perm=True))
    elif who == "staff without the permission":
        client.force_login(user("helper", staff=True))
    response = client.get(file_url(recording))
    assert response.status_code == 404
    assert BODY not in response.content


def test_a_recording_in_progress_or_missing_is_404(client, recording):
    client.force_login(user("root", staff=True, superuser=True))
    Recording.objects.filter(pk=recording.pk).update(status=Recording.Status.RECORDING)
    assert client.get(file_url(recording)).status_code == 404
    assert client.get(reverse("signaling:recording-file", args=[9999])).status_code == 404


def test_x_accel_redirect_leaves_the_body_to_nginx(client, recording, settings):
    settings.RECORDINGS_X_ACCEL_PREFIX = "/_recordings/"
    client.force_login(user("root", staff=True, superuser=True))
    response = client.get(file_url(recording))
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/_recordings/{NAME}"
    assert response["Content-Type"] == "video/webm"
    assert response.content == b""
    client.logout()
    anonymous = client.get(file_url(recording))
    assert anonymous.status_code == 404 and "X-Accel-Redirect" not in anonymous


@pytest.mark.parametrize(
    "path",
    [
        NAME,
        f"recordings/{NAME}",
        f"../recordings/{NAME}",
        f"streams/../../recordings/{NAME}",
    ],
)
def test_public_media_serving_cannot_reach_it(client, recording, path, settings):
    """What the repo serves under /media/ (its stream view) and what DEBUG media serving or
    nginx's `alias MEDIA_ROOT` would: the file is not under MEDIA_ROOT at all."""
    response = client.get(f"/media/{path}")
    assert response.status_code in (400, 404) and BODY not in response.content
    with pytest.raises((Http404, SuspiciousFileOperation)):
        serve(RequestFactory().get(f"/media/{path}"), path, document_root=settings.MEDIA_ROOT)


def test_deleting_a_row_deletes_its_file(recording, tmp_path):
    recording.delete()
    assert not (tmp_path / "recordings" / NAME).exists()
