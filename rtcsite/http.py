"""Small HTTP request helpers shared by the apps' views."""

from __future__ import annotations

from django.http import HttpRequest


def bearer_token(request: HttpRequest) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header, if any.

    Non-browser endpoints (face frames, stream ingest) authenticate this way rather than by
    cookie, which also makes them safely CSRF-exempt.
    """
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None
