"""Age bounds in hours (idle, retention): one reading of "0 switches the bound off"."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone


def cutoff(hours: float, now: datetime | None = None) -> datetime | None:
    """The time before which something is older than ``hours``; None when ``hours`` is 0
    (that bound is switched off)."""
    if hours <= 0:
        return None
    return (now or timezone.now()) - timedelta(hours=hours)
