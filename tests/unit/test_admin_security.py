"""Admin: a rotated publish key is shown on the action's page and travels nowhere else; wrong
passwords are throttled per username and per client address."""

from __future__ import annotations

import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.urls import reverse

from streaming.models import Stream
from streaming.services import create_stream

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery-staple-42"


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def staff(client):
    get_user_model().objects.create_superuser("root", "root@example.org", PASSWORD)
    return client


def test_rotated_key_is_on_the_page_and_in_no_cookie(staff):
    stream, old_key = create_stream("Rotate me", None)
    staff.force_login(get_user_model().objects.get(username="root"))
    response = staff.post(
        reverse("admin:streaming_stream_changelist"),
        {"action": "rotate_keys", "_selected_action": [stream.pk]},
    )
    assert response.status_code == 200
    html = response.content.decode()
    keys = re.findall(r"<code>(sk_[^<]+)</code>", html)
    assert len(keys) == 1
    stream = Stream.objects.get(pk=stream.pk)
    assert stream.check_publish_key(keys[0]) and not stream.check_publish_key(old_key)
    # Nothing the browser keeps or sends back carries it: no cookie at all (messages or
    # other), no message queued for the next page, no cache copy.
    assert keys[0] not in str(response.cookies)
    assert "messages" not in response.cookies
    assert "no-store" in response["Cache-Control"]
    follow_up = staff.get(reverse("admin:streaming_stream_changelist"))
    assert keys[0] not in follow_up.content.decode()
    assert keys[0] not in str(follow_up.cookies)


def login(client, username: str, password: str, address: str = "192.0.2.1"):
    return client.post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )


def logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_wrong_passwords_block_the_username_until_the_window_passes(staff, settings):
    settings.ADMIN_LOGIN_MAX_FAILURES = 3
    for _ in range(3):
        refused = login(staff, "root", "wrong")
        assert refused.status_code == 200 and "correct username and password" in (
            refused.content.decode()
        )
    # The next try is refused before any password check, the right one included, from
    # another address too (the username is blocked), with a message that says why.
    blocked = login(staff, "root", PASSWORD, address="198.51.100.7")
    assert not logged_in(blocked)
    assert "Too many failed sign-ins" in blocked.content.decode()
    # Another username from the first address: that address is blocked as well.
    get_user_model().objects.create_superuser("ops", "ops@example.org", PASSWORD)
    assert "Too many failed sign-ins" in login(staff, "ops", PASSWORD).content.decode()
    assert logged_in(login(staff, "ops", PASSWORD, address="198.51.100.7"))

    cache.clear()  # the window passed (its counters expired)
    assert logged_in(login(staff, "root", PASSWORD))


def test_failures_spread_over_usernames_block_the_address(staff, settings):
    settings.ADMIN_LOGIN_MAX_FAILURES = 3
    for name in ("a", "b", "c"):
        login(staff, name, "wrong", address="203.0.113.9")
    assert (
        "Too many failed sign-ins"
        in login(staff, "root", PASSWORD, address="203.0.113.9").content.decode()
    )
    assert logged_in(login(staff, "root", PASSWORD, address="203.0.113.10"))


def test_counters_expire_with_the_window(staff, settings):
    """The window is the counters' cache timeout, set once by the first failure (plus the
    second of slack every ``rtcsite.quotas.bump`` counter gets)."""
    settings.ADMIN_LOGIN_WINDOW = 600
    before = time.time()
    login(staff, "root", "wrong")
    login(staff, "root", "wrong")
    expiries = [cache._expire_info[key] for key in cache._cache]  # LocMemCache internals
    assert len(expiries) == 2  # one per username, one per address
    assert all(before + 600 <= expiry <= time.time() + 601 for expiry in expiries)
