"""The one cleaner of text shown to others: stream titles, room names and display names."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from identity.services import clean_display_name
from rooms.services import clean_room_name
from rtcsite.text import clean_title
from streaming.services import MAX_TITLE_LENGTH


def title(raw: object) -> str:
    return clean_title(raw, limit=MAX_TITLE_LENGTH, required="Give it a title.", plural="Titles")


# Every character the cleaner must refuse: controls (NUL first: PostgreSQL refuses it in
# text), bidi embeddings/overrides/isolates/marks, zero-width and other format characters,
# private use, a lone surrogate (JSON can carry one).
REFUSED = [
    "\x00",
    "\x07",
    "\x1b",
    "\x7f",
    "\x9b",
    "\u061c",  # ARABIC LETTER MARK
    "\u200b",  # ZERO WIDTH SPACE
    "\u200e",
    "\u200f",
    *[chr(c) for c in range(0x202A, 0x202F)],  # LRE RLE PDF LRO RLO
    *[chr(c) for c in range(0x2066, 0x206A)],  # LRI RLI FSI PDI
    "\u2060",  # WORD JOINER
    "\ufeff",  # BOM / ZERO WIDTH NO-BREAK SPACE
    "\U000e0041",  # TAG LATIN CAPITAL LETTER A
    "\ue000",  # private use
    "\ud800",  # lone surrogate
]


@pytest.mark.parametrize("bad", REFUSED, ids=lambda ch: f"U+{ord(ch):04X}")
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_invisible_and_control_characters_are_refused(bad, where):
    raw = {"start": bad + "show", "middle": "my" + bad + "show", "end": "show" + bad}[where]
    with pytest.raises(ValidationError) as exc:
        title(raw)
    assert exc.value.code == "invalid"
    assert f"U+{ord(bad):04X}" in exc.value.messages[0], "the message names what it cannot show"


def test_a_bidi_spoof_is_refused():
    with pytest.raises(ValidationError, match="invisible or control"):
        title("Official \u202egnirts\u202c stream")


def test_whitespace_is_collapsed_and_text_nfc_normalised():
    assert title("  Cafe\u0301 \t\n night\u00a0\u2003live\u2028 ") == "Café night live"
    # C0 separators and NEL are whitespace to Python: collapsed, not refused
    assert title("a\x1cb\x85c\r\nd") == "a b c d"


@pytest.mark.parametrize(
    "text",
    [
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian, with a ZWNJ
        "\u0915\u094d\u200d\u0937",  # Devanagari half form with a ZWJ
        "coders \U0001f469\u200d\U0001f4bb live",  # an emoji ZWJ sequence
        "\u05e9\u05dc\u05d5\u05dd world",  # right-to-left letters are fine; controls are not
    ],
)
def test_joiners_inside_words_are_kept(text):
    assert title(text) == text


@pytest.mark.parametrize("raw", ["\u200dshow", "show\u200c", "a \u200d b", "a\u200d\u200db"])
def test_joiners_that_only_hide_are_refused(raw):
    with pytest.raises(ValidationError) as exc:
        title(raw)
    assert exc.value.code == "invalid"


@pytest.mark.parametrize("raw", [None, "", "   ", "\n\t\u3000"])
def test_nothing_left_is_required(raw):
    with pytest.raises(ValidationError) as exc:
        title(raw)
    assert exc.value.code == "required" and exc.value.messages == ["Give it a title."]


@pytest.mark.parametrize("raw", [3, b"bytes", ["list"]])
def test_not_text_is_invalid(raw):
    with pytest.raises(ValidationError) as exc:
        title(raw)
    assert exc.value.code == "invalid"


def test_limit_counts_characters_after_normalising():
    assert title("e\u0301" * MAX_TITLE_LENGTH) == "é" * MAX_TITLE_LENGTH
    with pytest.raises(ValidationError) as exc:
        title("x" * (MAX_TITLE_LENGTH + 1))
    assert exc.value.code == "max_length"


@pytest.mark.parametrize("clean", [clean_display_name, clean_room_name], ids=["name", "room"])
def test_display_names_and_room_names_follow_the_same_rules(clean):
    assert clean("  Cafe\u0301   crew ") == "Café crew"
    for bad in ("evil\u202eeman", "nul\x00", "zero\u200bwidth"):
        with pytest.raises(ValidationError) as exc:
            clean(bad)
        assert exc.value.code == "invalid"
