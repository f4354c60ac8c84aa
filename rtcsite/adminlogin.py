"""Admin sign-in throttle: after ADMIN_LOGIN_MAX_FAILURES wrong passwords for one username or
from one client address within ADMIN_LOGIN_WINDOW seconds, every sign-in for that username or
address is refused (even with the right password) until the window, counted from the first
failure, has passed. This stops password guessing at a handful of tries per window.

Counts are rtcsite.quotas' counters in Django's cache: per process with the embedded defaults,
shared by every process with REDIS_URL. Unlike a quota, only failures count, and a blocked
attempt does not extend the window.
"""

from __future__ import annotations

import hashlib
import math

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache

from rtcsite import quotas
from rtcsite.http import client_address

KEY_PREFIX = "rtcsite:admin-login"


def _keys(username: str, address: str) -> list[str]:
    # hashed: usernames are client text (any length, any character), cache keys are not
    return [
        f"{KEY_PREFIX}:{kind}:{hashlib.sha256(value.encode('utf-8', 'replace')).hexdigest()}"
        for kind, value in (("user", username.strip().casefold()), ("addr", address))
    ]


def blocked(username: str, address: str) -> bool:
    """True while this username or this address has used up its failures."""
    counts = cache.get_many(_keys(username, address))
    return any(count >= settings.ADMIN_LOGIN_MAX_FAILURES for count in counts.values())


def record_failure(username: str, address: str) -> None:
    for key in _keys(username, address):
        quotas.bump(key, settings.ADMIN_LOGIN_WINDOW)  # the window starts at the first failure


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, refusing before any password check while throttled."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": (
            "Too many failed sign-ins for this account or from this address. Sign-in is "
            "blocked for up to %(minutes)d minutes; try again later."
        ),
    }

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request) or "unknown"
        if blocked(username, address):
            raise forms.ValidationError(
                self.error_messages["throttled"],
                code="throttled",
                params={"minutes": math.ceil(settings.ADMIN_LOGIN_WINDOW / 60)},
            )
        try:
            return super().clean()
        except forms.ValidationError as exc:
            if exc.code == "invalid_login":  # not "inactive" / "not staff": the password was right
                record_failure(username, address)
            raise
