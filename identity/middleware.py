"""Attach the visitor's identity to every HTTP request (lazily)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils.functional import SimpleLazyObject

from identity.services import get_or_create_identity
from rtcsite import quotas
from rtcsite.errors import RateLimited, http_response, with_retry_after
from rtcsite.http import client_address


class IdentityMiddleware:
    """Set ``request.identity``; the session (and its cookie) is created only when used.

    A new identity counts towards the client address's quota (``rtcsite.quotas``); over
    it, the request is answered 429 with ``Retry-After``: a short page for browsers, the
    JSON error for anything else.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        address = client_address(request)
        request.identity = SimpleLazyObject(
            lambda: get_or_create_identity(request.session, address=address)
        )
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not (
            isinstance(exc, RateLimited) and exc.details.get("quota") == quotas.IDENTITY_MINT.name
        ):
            return None
        if "text/html" not in request.headers.get("Accept", ""):
            return http_response(exc)
        # Rendered without the request: the base template's context needs an identity.
        html = render_to_string("rate_limited.html", {"message": exc.message})
        return with_retry_after(HttpResponse(html, status=exc.status), exc)
