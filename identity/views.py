"""Identity endpoints: change display name, fetch a fresh WebSocket token."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from identity.services import set_display_name
from identity.tokens import issue_token
from rtcsite.http import client_address


def _safe_next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or "/"
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return "/"


@require_POST
def change_name(request: HttpRequest) -> HttpResponse:
    """Set the display name (form post from the header); errors come back as a message."""
    try:
        identity = set_display_name(
            request.session, request.POST.get("name", ""), address=client_address(request)
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"You are now “{identity.name}”.")
    return redirect(_safe_next(request))


@never_cache
@require_GET
def token(request: HttpRequest) -> JsonResponse:
    """A fresh token for reconnecting sockets (same-origin only: no CORS headers)."""
    identity = request.identity
    return JsonResponse(
        {
            "token": issue_token(identity),
            "max_age": settings.WS_TOKEN_MAX_AGE,
            "identity": identity.as_dict(),
        }
    )
