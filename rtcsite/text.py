"""Cleaning the text people type for others to see: room names, stream titles, display names.

One cleaner for all of them, so every name shown in the lobby, a room or a stream page
obeys the same rules: NFC, runs of whitespace collapsed to one space, and no character
that is invisible or changes how *other* text is drawn. Control characters (a NUL is also
refused by PostgreSQL), bidi overrides and isolates (U+202E makes the lobby show a name
backwards, and everything after it), zero-width spaces, private-use and lone-surrogate
code points are refused with a message naming the first one, not silently dropped: the
person typing cannot see them, so telling them beats showing something else.
"""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError

#: General categories refused anywhere: control, format, private use, surrogate.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs"})
#: Format characters allowed *between two visible characters*: ZWNJ and ZWJ are part of
#: ordinary spelling in Persian and Indic scripts and of emoji sequences (👩‍💻), and neither
#: reorders text. At an edge, next to a space or another format character they only hide.
JOINERS = frozenset({"\u200c", "\u200d"})


def _visible(ch: str) -> bool:
    return not ch.isspace() and unicodedata.category(ch) not in REFUSED_CATEGORIES


def first_refused(text: str) -> int | None:
    """Index of the first character ``clean_title`` refuses in ``text``, or ``None``."""
    for index, ch in enumerate(text):
        if unicodedata.category(ch) not in REFUSED_CATEGORIES:
            continue
        if (
            ch in JOINERS
            and 0 < index < len(text) - 1
            and _visible(text[index - 1])
            and _visible(text[index + 1])
        ):
            continue
        return index
    return None


def clean_title(raw: object, *, limit: int, required: str, plural: str) -> str:
    """``raw`` NFC-normalised, with runs of whitespace collapsed to one space.

    ``ValidationError`` with code ``required`` (message ``required``) if nothing is left,
    ``invalid`` if it is not text or holds a refused character (see the module), or
    ``max_length`` if longer than ``limit``; ``plural`` names the things in those messages
    ("Titles", "Room names", "Display names").
    """
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise ValidationError(f"{plural} must be text.", code="invalid")
    title = " ".join(unicodedata.normalize("NFC", raw).split())
    if not title:
        raise ValidationError(required, code="required")
    bad = first_refused(title)
    if bad is not None:
        raise ValidationError(
            f"{plural} cannot contain invisible or control characters (U+{ord(title[bad]):04X}).",
            code="invalid",
        )
    if len(title) > limit:
        raise ValidationError(f"{plural} are limited to {limit} characters.", code="max_length")
    return title
