"""Validation of the ``ICE_SERVERS`` setting (STUN/TURN entries handed to browsers)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured

ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
ALLOWED_KEYS = {"urls", "username", "credential", "secret", "ttl"}


def validate_ice_servers(value: Any) -> list[dict[str, Any]]:
    """Check an RTCIceServer-like list and return it normalised (``urls`` always a list).

    An entry may carry ``secret`` (and ``ttl``) instead of ``username``/``credential``:
    the signaling layer then derives short-lived TURN REST credentials per client, so the
    shared secret itself never reaches a browser.
    """
    if not isinstance(value, list):
        raise ImproperlyConfigured("ICE_SERVERS must be a JSON list of objects with 'urls'.")
    servers: list[dict[str, Any]] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or "urls" not in entry:
            raise ImproperlyConfigured(f"ICE_SERVERS[{index}] must be an object with 'urls'.")
        unknown = set(entry) - ALLOWED_KEYS
        if unknown:
            raise ImproperlyConfigured(
                f"ICE_SERVERS[{index}] has unknown keys: {', '.join(sorted(unknown))}."
            )
        urls = entry["urls"]
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not all(isinstance(u, str) and u.startswith(ICE_SCHEMES) for u in urls):
            raise ImproperlyConfigured(
                f"ICE_SERVERS[{index}].urls must be stun:/stuns:/turn:/turns: URLs."
            )
        servers.append({**entry, "urls": list(urls)})
    return servers


def turn_rest_credentials(secret: str, user: str, ttl: int, now: float) -> tuple[str, str]:
    """TURN REST credentials, as coturn's ``use-auth-secret`` checks them.

    username = "<unix expiry>:<user>", credential = base64(HMAC-SHA1(secret, username)).
    The TURN server recomputes the HMAC, so only short-lived values reach the browser.
    """
    username = f"{int(now) + int(ttl)}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def client_ice_servers(
    servers: list[dict[str, Any]], user: str, now: float | None = None
) -> list[dict[str, Any]]:
    """The RTCIceServer list for one client: entries with a ``secret`` get derived
    credentials (default lifetime 1 h); the secret itself is never included."""
    now = time.time() if now is None else now
    result: list[dict[str, Any]] = []
    for entry in servers:
        public = {k: v for k, v in entry.items() if k not in {"secret", "ttl"}}
        if "secret" in entry:
            username, credential = turn_rest_credentials(
                str(entry["secret"]), user, int(entry.get("ttl", 3600)), now
            )
            public.update(username=username, credential=credential)
        result.append(public)
    return result
