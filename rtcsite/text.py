"""Cleaning the titles people type: room names, stream titles."""

from __future__ import annotations

from django.core.exceptions import ValidationError


def clean_title(raw: str | None, *, limit: int, required: str, plural: str) -> str:
    """``raw`` with runs of whitespace collapsed to one space.

    ``ValidationError`` (code ``required``, message ``required``) if nothing is left, or
    (code ``max_length``) if longer than ``limit``; ``plural`` names the things in that
    message ("Titles", "Room names").
    """
    title = " ".join((raw or "").split())
    if not title:
        raise ValidationError(required, code="required")
    if len(title) > limit:
        raise ValidationError(f"{plural} are limited to {limit} characters.", code="max_length")
    return title
