"""Small HTTP request helpers shared by the apps' views."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse


def bearer_token(request: HttpRequest) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header, if any.

    Non-browser endpoints (face frames, stream ingest) authenticate this way rather than by
    cookie, which also makes them safely CSRF-exempt.
    """
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


#: On every stream media response (playlists, manifests, segments, their errors): players
#: on other origins may read them, including a part's length and range.
MEDIA_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges",
}


def client_address(request: HttpRequest) -> str:
    """The client's address as the server sees it (``REMOTE_ADDR``).

    Behind a proxy, Daphne runs with ``--proxy-headers`` and puts the address the proxy
    names in ``X-Forwarded-For`` here (docs/deploy.md); the header itself is never read,
    so a client cannot choose the address it is counted under.
    """
    return request.META.get("REMOTE_ADDR") or ""


def scope_address(scope: dict) -> str:
    """``client_address`` for an ASGI scope (sockets)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def refusal_page(request: HttpRequest, template: str, context: dict, exc) -> HttpResponse:
    """A form's page again, with ``exc`` (a ``ClientError``) as its error message, the
    error's status and ``Retry-After`` on 429/503."""
    from django.contrib import messages
    from django.shortcuts import render

    from rtcsite.errors import with_retry_after

    messages.error(request, exc.message)
    return with_retry_after(render(request, template, context, status=exc.status), exc)
