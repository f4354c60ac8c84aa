"""The WebSocket Origin rule (rtcsite/ws/origin.py) on scopes as Daphne builds them; the
real-Daphne refusals are in tests/integration/test_ws_auth_daphne.py."""

from __future__ import annotations

import pytest

from rtcsite.ws.origin import origin_allowed


def scope(host: str, origin: str | None, **extra: str) -> dict:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    headers += [(name.encode(), value.encode()) for name, value in extra.items()]
    return {"type": "websocket", "headers": headers}


@pytest.fixture(autouse=True)
def hosts(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1", "[::1]", "rtc.example.org"]
    settings.CSRF_TRUSTED_ORIGINS = []
    settings.SECURE_PROXY_SSL_HEADER = None


@pytest.mark.parametrize(
    ("host", "origin", "allowed"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000", True),
        ("127.0.0.1", "http://127.0.0.1:80", True),  # default ports are the same origin
        ("[::1]:8000", "http://[::1]:8000", True),
        ("127.0.0.1:8000", "http://127.0.0.1:8001", False),
        ("127.0.0.1:8000", "https://127.0.0.1:8000", False),
        ("127.0.0.1:8000", "http://127.0.0.1", False),
        ("evil.example:8000", "http://evil.example:8000", False),  # host not allowed
        ("127.0.0.1:8000", "null", False),
        ("127.0.0.1:8000", "file://", False),
        ("127.0.0.1:8000", "http://127.0.0.1:99999", False),
        ("127.0.0.1:8000", None, False),
    ],
)
def test_origin_must_be_the_sockets_own(host, origin, allowed):
    assert origin_allowed(scope(host, origin)) is allowed


def test_tls_served_origins_are_declared(settings):
    """Daphne serving TLS itself (serve_lan) gives no scheme: its https origin is listed."""
    assert not origin_allowed(scope("127.0.0.1:8443", "https://127.0.0.1:8443"))
    settings.CSRF_TRUSTED_ORIGINS = ["https://127.0.0.1:8443"]
    assert origin_allowed(scope("127.0.0.1:8443", "https://127.0.0.1:8443"))
    assert not origin_allowed(scope("127.0.0.1:8443", "https://127.0.0.1:8000"))


def test_behind_a_tls_proxy_the_forwarded_scheme_counts(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    forwarded = {"x-forwarded-proto": "https"}
    assert origin_allowed(scope("rtc.example.org", "https://rtc.example.org", **forwarded))
    assert not origin_allowed(scope("rtc.example.org", "http://rtc.example.org", **forwarded))
    assert not origin_allowed(scope("rtc.example.org", "https://rtc.example.org"))
