"""Production headers the site adds itself (Django 5.2 has no built-in CSP).

Imported by settings (``parse_proxy_ssl_header``), so nothing here imports Django models.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse


def parse_proxy_ssl_header(raw: str) -> tuple[str, str] | None:
    """``"X-Forwarded-Proto"`` or ``"X-Forwarded-Proto,https"`` → Django's META form.

    ``("HTTP_X_FORWARDED_PROTO", "https")``; an already-META name is kept. Empty: ``None``
    (no proxy header is trusted, Django's default).
    """
    text = raw.strip()
    if not text:
        return None
    name, _, value = (part.strip() for part in text.partition(","))
    if not name or any(ch.isspace() for ch in name) or "," in value:
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={raw!r}: use a header name, e.g. 'X-Forwarded-Proto' "
            "(optionally ',https')."
        )
    meta = name.upper().replace("-", "_")
    if not meta.startswith("HTTP_"):
        meta = f"HTTP_{meta}"
    return meta, value or "https"


class ContentSecurityPolicyMiddleware:
    """Adds ``settings.CONTENT_SECURITY_POLICY`` to every response that has none (as
    ``...-Report-Only`` when CONTENT_SECURITY_POLICY_REPORT_ONLY is set)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.policy = settings.CONTENT_SECURITY_POLICY
        self.header = (
            "Content-Security-Policy-Report-Only"
            if settings.CONTENT_SECURITY_POLICY_REPORT_ONLY
            else "Content-Security-Policy"
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if self.policy:
            response.headers.setdefault(self.header, self.policy)
        return response
