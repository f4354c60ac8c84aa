"""Attach the visitor's identity to every HTTP request (lazily)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

from identity.services import get_or_create_identity


class IdentityMiddleware:
    """Set ``request.identity``; the session (and its cookie) is created only when used."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.identity = SimpleLazyObject(lambda: get_or_create_identity(request.session))
        return self.get_response(request)
