"""Template context: the visitor's identity and a fresh WebSocket token."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from identity.tokens import issue_token


def identity(request: HttpRequest) -> dict[str, Any]:
    """Expose ``identity`` and ``ws_token`` lazily: pages that don't use them pay nothing."""
    ident = getattr(request, "identity", None)
    if ident is None:
        return {}
    return {
        "identity": ident,
        "ws_token": lambda: issue_token(ident),
        "ws_token_max_age": settings.WS_TOKEN_MAX_AGE,
    }
