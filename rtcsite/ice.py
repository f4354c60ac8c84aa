"""Validation of the ``ICE_SERVERS`` setting (STUN/TURN entries handed to browsers)."""

from __future__ import annotations

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
