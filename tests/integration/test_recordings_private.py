"""Issue 14.9 on a real Daphne: a recording is out of reach of every public URL the site
serves, and its one view gives the bytes to staff only (or, behind nginx, an
``X-Accel-Redirect`` and no body)."""

from __future__ import annotations

import http.client
import json

import pytest

BODY = b"\x1a\x45\xdf\xa3PRIVATE-RECORDING"

SETUP = """
import json, secrets
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import Permission
from django.contrib.sessions.backends.db import SessionStore
from signaling.models import Recording

def session(user):
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key

User = get_user_model()
name = secrets.token_urlsafe(24) + ".webm"
settings.RECORDINGS_ROOT.mkdir(parents=True, exist_ok=True)
(settings.RECORDINGS_ROOT / name).write_bytes(BODY)
row = Recording.objects.create(room_slug="echo-1", room_kind="echo", participant="Ada",
    user_id="00000000000000aa", file=name, status="done", size_bytes=len(BODY))
print(json.dumps({"pk": row.pk, "name": name, "sessions": {
    "superuser": session(User.objects.create_superuser("root", "r@example.org", "pw")),
    "visitor": session(User.objects.create_user("bob", "b@example.org", "pw")),
    "staff without the permission": session(
        User.objects.create_user("helper", "h@example.org", "pw", is_staff=True)),
}}))
"""


def get(server, path: str, session: str | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        if session:
            conn.putheader("Cookie", f"sessionid={session}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def site(live_server_proc):
    out = live_server_proc.manage("shell", "-c", SETUP.replace("BODY", repr(BODY)))
    return live_server_proc, json.loads(out.strip().splitlines()[-1])


def test_no_public_url_reaches_a_recording(site):
    server, made = site
    name = made["name"]
    assert (server.workdir / "recordings" / name).read_bytes() == BODY
    assert not any(p.name == name for p in (server.workdir / "media").rglob("*"))
    for path in [
        f"/media/{name}",
        f"/media/recordings/{name}",
        f"/media/streams/{name}",
        f"/media/streams/../../recordings/{name}",
        f"/media/streams/%2e%2e/%2e%2e/recordings/{name}",
        f"/media/streams/x/..%2f..%2f..%2frecordings%2f{name}",
        f"/recordings/{name}",
        f"/static/../recordings/{name}",
    ]:
        status, _headers, body = get(server, path)
        assert status in (400, 404), (path, status)
        assert BODY not in body


def test_only_staff_get_the_file(site):
    server, made = site
    url = f"/recordings/{made['pk']}/"
    for who in (None, "visitor", "staff without the permission"):
        session = made["sessions"][who] if who else None
        status, _headers, body = get(server, url, session)
        assert status == 404, who
        assert BODY not in body
    status, headers, body = get(server, url, made["sessions"]["superuser"])
    assert status == 200
    assert body == BODY
    assert headers["content-type"] == "video/webm"
    assert headers["content-disposition"].startswith("attachment;")


def test_behind_nginx_the_view_answers_with_x_accel_redirect(site, daphne_factory):
    first, made = site
    server = daphne_factory(
        {
            "RECORDINGS_X_ACCEL_PREFIX": "/_recordings/",
            "RECORDINGS_ROOT": str(first.workdir / "recordings"),
        },
        same_db_as=first,
    )
    url = f"/recordings/{made['pk']}/"
    status, headers, body = get(server, url, made["sessions"]["superuser"])
    assert status == 200
    assert headers["x-accel-redirect"] == f"/_recordings/{made['name']}"
    assert body == b""
    status, headers, body = get(server, url)
    assert status == 404 and "x-accel-redirect" not in headers
