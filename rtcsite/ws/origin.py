"""The WebSocket Origin check: the page that opens a socket must be this site's page.

Channels' ``AllowedHostsOriginValidator`` compares only the Origin's *host* with
ALLOWED_HOSTS, so a page served by any other scheme or port of an allowed host (an
``http://`` page on a TLS site, another service on the same machine's port 8080) could
open sockets with the visitor's identity. Here the whole origin (scheme, host, port) must
be the socket's own origin, read from its Host header and scheme, or be one the deployment
declares in CSRF_TRUSTED_ORIGINS (how a TLS-terminating Daphne or proxy names its https
origin: Daphne puts no scheme in a WebSocket scope, so a socket cannot tell it came over TLS
unless SECURE_PROXY_SSL_HEADER says so). The host must still be in ALLOWED_HOSTS.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]


def parse_origin(value: str) -> Origin | None:
    """``scheme://host[:port]`` → (scheme, host, port) with the default port filled in;
    ``None`` for anything else (``null``, paths, other schemes, bad ports)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.username or parts.password or parts.query or parts.fragment:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


def socket_origin(scope) -> Origin | None:
    """The origin a page that opened this socket legitimately has: its Host and scheme."""
    host = _header(scope, b"host")
    if not host:
        return None
    secure = scope.get("scheme") == "wss"
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, expected = settings.SECURE_PROXY_SSL_HEADER
        header = meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin1")
        secure = secure or _header(scope, header) == expected
    return parse_origin(f"{'https' if secure else 'http'}://{host}")


def trusted_origins() -> set[Origin]:
    return {origin for value in settings.CSRF_TRUSTED_ORIGINS if (origin := parse_origin(value))}


def origin_allowed(scope) -> bool:
    raw = _header(scope, b"origin")
    origin = parse_origin(raw) if raw is not None else None
    if origin is None:
        return False
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:  # as Django and Channels do
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    host = f"[{origin[1]}]" if ":" in origin[1] else origin[1]  # IPv6 as ALLOWED_HOSTS spells it
    if not validate_host(host, allowed_hosts):
        return False
    return origin == socket_origin(scope) or origin in trusted_origins()


class SameOriginValidator:
    """ASGI wrapper: refuse (403 at the handshake) a socket whose Origin is not the site's."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator guards WebSocket connections only.")
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
